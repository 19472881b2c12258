"""Any Pillow image -> uint8 RGB, scaling high-depth modes instead of clipping them.

Pillow's `convert("RGB")` clips 16-bit and 32-bit greyscale ("I;16", "I") to 255, so a 16-bit scan comes out
all white. Here integer greyscale is read as 16-bit data (0..65535 -> 0..255, round(v / 257), the exact
full-range map) and float greyscale ("F") as 0..1 or 0..255; every other mode (P, LA, CMYK, YCbCr, RGBA...)
goes through Pillow's own conversion, which is correct for them.
"""
from __future__ import annotations

import numpy as np

from ffcv_amcl.errors import UserError

_FULL_16 = 65535


def to_rgb8(image, name) -> np.ndarray:
    """uint8 (H, W, 3) RGB array of a PIL image; `name` (a file) is named in the UserError for values that
    have no 8-bit reading."""
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image)
    if mode == "I" or mode.startswith("I;16"):
        grey = _scale(np.asarray(image, dtype=np.float64), _FULL_16, name, mode)
    elif mode == "F":
        values = np.asarray(image, dtype=np.float64)
        grey = _scale(values, 1.0 if values.size and np.nanmax(values) <= 1.0 else 255.0, name, mode)
    else:
        try:
            return np.asarray(image.convert("RGB"))
        except ValueError:  # modes with no direct path, e.g. premultiplied "La"
            return np.asarray(image.convert("RGBA").convert("RGB"))
    return np.repeat(grey[..., None], 3, axis=-1)


def _scale(values: np.ndarray, full: float, name, mode: str) -> np.ndarray:
    """values in [0, full] -> uint8 0..255, rounded; UserError outside that range (or NaN)."""
    if values.size and not (np.isfinite(values).all() and values.min() >= 0 and values.max() <= full):
        raise UserError(f"image {name} ({mode}) has values outside 0..{full:g}: convert it to an 8- or 16-bit "
                        f"image first")
    return np.rint(values * (255.0 / full)).astype(np.uint8)
