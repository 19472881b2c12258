"""Horizontal flip (p = 0.5)."""
from __future__ import annotations

from numba import njit

from .rng import FLIP, uniform
from .stage import ViewStage, on_a_copy


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


class RandomFlip(ViewStage):
    """Mirror each view with probability p (one number, or one per view), in place, each view with its own
    stream."""

    family = FLIP

    def __init__(self, *, p=0.5, **kwargs):
        super().__init__(**kwargs)
        self.p = self.per_view(p)

    def generate_code(self):
        p = self.p

        def act(image, key, v):
            if flip_draw(key, p[v]):
                hflip_inplace(image)

        return self.per_view_code(act)
