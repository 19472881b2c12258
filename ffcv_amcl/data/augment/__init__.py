"""Augmentation stages for FFCV pipelines and their deterministic functional forms.

Path of one image: views.MultiViewDecoder (decode once, a random resized crop per view: two global views and N
local ones, recipe.py) -> flip -> colour jitter -> colour drop -> blur -> solarize, all numba-compiled, in place
on one flat uint8 row per sample (layout.py), each view of each image with its own counter-based random stream
(rng.py).

The names below are imported from their modules on first use: `ffcv_amcl.data.augment.spec` (the letters) and
`.recipe` (the views' settings), which config.py reads, then load without numba or FFCV, whose import sets
torch's thread count.
"""
from __future__ import annotations

import importlib

_HOMES = {
    "RandomBlur": "blur", "gaussian_blur": "blur", "kernel_size_for": "blur",
    "ColorJitter": "colour", "RandomGrayscale": "colour", "adjust_brightness": "colour",
    "adjust_contrast": "colour", "adjust_hue": "colour", "adjust_saturation": "colour",
    "rgb_to_grayscale": "colour",
    "random_crop_params": "crop", "resized_crop": "crop",
    "RandomFlip": "flip", "hflip": "flip",
    "ViewLayout": "layout",
    "ViewRecipe": "recipe", "default_local_size": "recipe",
    "EpochCounter": "rng",
    "RandomSolarize": "solarization", "solarize": "solarization",
    "parse_augs": "spec", "view_letters": "spec",
    "MultiViewDecoder": "views",
}
__all__ = list(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
