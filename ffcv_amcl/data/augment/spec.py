"""The augmentation letters (`data.augs`, `data.augs_b`, preview's `--augs`): which families a view gets.

  a  random resized crop (without it the view is the full image resized)
  b  Gaussian blur
  c  colour drop (grayscale)
  d  colour distortion (colour jitter)
  e  horizontal flip
  f  solarization (threshold 128)

Names: `default` = `acde` (the reference's CIFAR setting, blur off at 32 px); `color` (or `colour`) = `cd` (the
two colour families alone, on the full image); `all` = `abcdef`; `none` or "" = no augmentation. Otherwise any
subset of the letters, in any order. View b's string (`data.augs_b`, `--augs-b`) left empty means "the same as
view a". The local views of multi-crop take view b's letters (recipe.py). `view_letters` is the one reader of
these strings: every command that takes them (train, profile, plots, preview) goes through it, so a string means
the same to all of them.
"""
from __future__ import annotations

from ffcv_amcl.errors import UserError

FAMILIES = {"a": "crop", "b": "blur", "c": "colour drop", "d": "colour jitter", "e": "flip", "f": "solarize"}
LETTERS = "".join(FAMILIES)
NAMES = {"default": "acde", "color": "cd", "colour": "cd", "all": "abcdef", "none": ""}
AUGS_HELP = (f"letters from {LETTERS} ({', '.join(f'{k} {v}' for k, v in FAMILIES.items())}) or a name: "
             + ", ".join(f"{name} = {letters or 'no augmentation'}" for name, letters in NAMES.items()))


def parse_augs(augs: str, *, flag: str = "augs") -> frozenset:
    """Letters of `augs` as a frozenset; UserError (one line) for anything unknown."""
    if not isinstance(augs, str):
        raise UserError(f"--{flag} must be a string such as 'default' or 'abcde', got {augs!r}")
    text = augs.strip().lower()
    text = NAMES.get(text, text)
    bad = sorted(set(text) - set(LETTERS))
    if bad:
        raise UserError(f"unknown augmentation {''.join(bad)!r} in --{flag}={augs!r}: use {AUGS_HELP}")
    return frozenset(text)


def view_letters(augs: str, augs_b: str | None = None, *,
                 flags: tuple[str, str] = ("augs", "augs_b")) -> tuple[frozenset, frozenset]:
    """(letters of view a, letters of view b); an empty or missing `augs_b` gives view b the letters of view a.
    `flags` name the two settings in the error line."""
    letters_a = parse_augs(augs, flag=flags[0])
    return letters_a, (parse_augs(augs_b, flag=flags[1]) if augs_b else letters_a)
