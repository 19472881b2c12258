"""Horizontal flip (p = 0.5)."""
from __future__ import annotations

from numba import njit

from .rng import FLIP, uniform
from .stage import ToggleStage, on_a_copy


@njit(cache=True, error_model="numpy")
def hflip_inplace(img):
    h, w = img.shape[0], img.shape[1]
    for y in range(h):
        for x in range(w // 2):
            for c in range(3):
                t = img[y, x, c]
                img[y, x, c] = img[y, w - 1 - x, c]
                img[y, w - 1 - x, c] = t


def hflip(img):
    """Functional form: a mirrored copy (torchvision horizontal_flip)."""
    return on_a_copy(hflip_inplace, img)


@njit(cache=True, error_model="numpy")
def flip_draw(key, p):
    return uniform(key, 0) < p


class RandomFlip(ToggleStage):
    """Mirror each view with probability p (default 0.5; one number, or one per view), in place, each view with
    its own stream."""

    family = FLIP
    draw, transform = flip_draw, hflip_inplace
