"""The `--augs` letters (AMCL_SPEC.md): which augmentation families a view gets.

  a  random resized crop (without it the view is the full image resized)
  b  Gaussian blur
  c  colour drop (grayscale)
  d  colour distortion (colour jitter)
  e  horizontal flip

Names: `default` = `acde` (the reference's CIFAR setting, blur off at 32 px); `color` = `cd`
(the two colour families alone, on the full image); `all` = `abcde`; `none` or "" = no
augmentation. Otherwise any subset of the letters, in any order.
"""
from __future__ import annotations

from ffcv_amcl.errors import UserError

LETTERS = "abcde"
NAMES = {"default": "acde", "color": "cd", "colour": "cd", "all": "abcde", "none": ""}


def parse_augs(augs: str, *, flag: str = "augs") -> frozenset:
    """Letters of `augs` as a frozenset; UserError (one line) for anything unknown."""
    if not isinstance(augs, str):
        raise UserError(f"--{flag} must be a string such as 'default' or 'abcde', got {augs!r}")
    text = augs.strip().lower()
    text = NAMES.get(text, text)
    bad = sorted(set(text) - set(LETTERS))
    if bad:
        raise UserError(
            f"unknown augmentation {''.join(bad)!r} in --{flag}={augs!r}; use default, color, all, "
            f"none or letters from abcde (a crop, b blur, c colour drop, d colour jitter, e flip)")
    return frozenset(text)
