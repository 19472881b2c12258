"""Horizontal flip (p = 0.5)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
from numba import njit

from ffcv.pipeline.compiler import Compiler

from .rng import FLIP, read_counter, runtime_ints, stream_key, uniform
from .stage import ViewStage


@njit(cache=True, error_model="numpy")
def hflip_inplace(img):
    h, w = img.shape[0], img.shape[1]
    for y in range(h):
        for x in range(w // 2):
            for c in range(3):
                t = img[y, x, c]
                img[y, x, c] = img[y, w - 1 - x, c]
                img[y, w - 1 - x, c] = t


@njit(cache=True, error_model="numpy")
def hflip(img):
    """Functional form: a mirrored copy (torchvision horizontal_flip)."""
    out = np.ascontiguousarray(img).copy()
    hflip_inplace(out)
    return out


@njit(cache=True, error_model="numpy")
def flip_draw(key, p):
    return uniform(key, 0) < p


class RandomFlip(ViewStage):
    """Mirror each view with probability p, in place, each view with its own stream."""

    def __init__(self, *, p=0.5, **kwargs):
        super().__init__(**kwargs)
        self.p = float(p)

    def generate_code(self):
        my_range = Compiler.get_iterator()
        ints, enabled, p = runtime_ints(self.seed, self.epoch_address), self.enabled, self.p

        def flip(images, _dst, indices):
            seed, epoch = ints[0], read_counter(ints[1])
            for i in my_range(images.shape[0]):
                for v in range(images.shape[1]):
                    if enabled[v] and flip_draw(stream_key(seed, epoch, indices[i], v, FLIP), p):
                        hflip_inplace(images[i, v])
            return images

        return self.finish(flip)
