"""Solarization (p = 0.2 on view b by default, threshold 128): every value >= the threshold is inverted, 255 - x.

torchvision's `solarize` on uint8 images (RandomSolarize(threshold=128, p) applies it with probability p), as in
BYOL's and DINO's recipes, where view a is never solarized and view b with p = 0.2.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .rng import SOLARIZE, uniform
from .stage import ViewStage, on_a_copy


@njit(cache=True, fastmath=True, error_model="numpy")
def _solarize_lut(threshold):
    lut = np.empty(256, np.uint8)
    for x in range(256):
        lut[x] = np.uint8(255 - x) if np.float64(x) >= threshold else np.uint8(x)
    return lut


@njit(cache=True, fastmath=True, error_model="numpy")
def solarize_inplace(img, threshold):
    flat = img.reshape(-1)
    lut = _solarize_lut(np.float64(threshold))
    for j in range(flat.shape[0]):
        flat[j] = lut[flat[j]]


def solarize(img, threshold):
    """Functional form (torchvision solarize on uint8): a copy with every value >= threshold inverted."""
    if threshold > 255:
        raise ValueError("solarize: threshold must be at most 255 for uint8 images")
    return on_a_copy(solarize_inplace, img, threshold)


@njit(cache=True, error_model="numpy")
def solarize_draw(key, p):
    return uniform(key, 0) < p


class RandomSolarize(ViewStage):
    """Solarize each view with probability p (one number, or one per view) at `threshold`."""

    family = SOLARIZE

    def __init__(self, *, p=0.2, threshold=128.0, **kwargs):
        super().__init__(**kwargs)
        if not float(threshold) <= 255:
            raise ValueError(f"threshold must be at most 255 for uint8 images, got {threshold!r}")
        self.p = self.per_view(p)
        self.threshold = float(threshold)

    def generate_code(self):
        p, threshold = self.p, self.threshold

        def act(image, key, v):
            if solarize_draw(key, p[v]):
                solarize_inplace(image, threshold)

        return self.per_view_code(act)
