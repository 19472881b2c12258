"""Augmentation stages for FFCV pipelines and their deterministic functional forms.

Path of one image: views.TwoViewDecoder (decode once, two random resized crops) -> flip ->
colour jitter -> colour drop -> blur, all numba-compiled, in place on (B, 2, S, S, 3) uint8, each
image with its own counter-based random stream (rng.py).
"""
from .blur import RandomBlur, gaussian_blur, kernel_size_for
from .colour import (ColorJitter, RandomGrayscale, adjust_brightness, adjust_contrast,
                     adjust_hue, adjust_saturation, rgb_to_grayscale)
from .crop import random_crop_params, resized_crop
from .flip import RandomFlip, hflip
from .rng import EpochCounter
from .spec import parse_augs
from .views import TwoViewDecoder

__all__ = [
    "TwoViewDecoder", "RandomFlip", "ColorJitter", "RandomGrayscale", "RandomBlur",
    "EpochCounter", "parse_augs", "kernel_size_for", "random_crop_params",
    "hflip", "resized_crop", "adjust_brightness", "adjust_contrast", "adjust_saturation",
    "adjust_hue", "rgb_to_grayscale", "gaussian_blur",
]
