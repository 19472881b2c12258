"""The embedded default dataset: scikit-learn's bundled 8x8 handwritten digits as 32x32 RGB.

It ships inside scikit-learn, so the quickstart and the tests need no download. The 8x8 grey
images (values 0-16) are upscaled 4x with bilinear interpolation (half-pixel centres, edges
clamped, the convention of PIL and torch's `align_corners=False`), scaled to 0-255, rounded, and
copied into three channels. Bilinear rather than nearest keeps strokes smooth, so random crops and
blur see an image rather than 4x4 blocks.
"""
from __future__ import annotations

import numpy as np

from ffcv_amcl.errors import check

SIZE = 32
TEST_FRACTION = 0.2
SPLIT_SEED = 0
CLASSES = [str(d) for d in range(10)]


def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights: output pixel i samples the input at (i + 0.5) * n_in / n_out - 0.5."""
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = pos - lo
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), lo] += 1 - frac
    m[np.arange(n_out), hi] += frac
    return m


def upscale(images8: np.ndarray) -> np.ndarray:
    """(N, 8, 8) values 0-16 -> uint8 (N, 32, 32, 3)."""
    m = bilinear_matrix(images8.shape[1], SIZE)
    big = np.einsum("ij,njk,lk->nil", m, images8.astype(np.float64), m) * (255.0 / 16.0)
    grey = np.clip(np.rint(big), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=-1))


def split_indices(labels: np.ndarray, split: str) -> np.ndarray:
    """Stratified 80/20 split with a fixed seed; indices sorted so the source order is kept."""
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(np.arange(len(labels)), test_size=TEST_FRACTION, stratify=labels,
                                   random_state=SPLIT_SEED)
    return np.sort(train if split == "train" else test)


def load_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    """images uint8 (N, 32, 32, 3), labels int64 (N,) for split train (1437 images) or test (360)."""
    check(split in ("train", "test"), f"split {split!r} does not exist for digits: use train or test")
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    labels = bunch.target.astype(np.int64)
    idx = split_indices(labels, split)
    return upscale(bunch.images[idx]), labels[idx]
