"""Gaussian blur (p = 0.5 by default, one per view, sigma ~ U(0.1, 2.0)) as two 1-D passes with reflect padding.

The kernel is torchvision's: exp(-x^2 / (2 sigma^2)) at integer offsets, normalised to sum 1;
the result is rounded to uint8. Taps whose weight is below 1e-7 are skipped (they cannot change a
rounded uint8 value), which makes small sigmas cheap even with a 23-tap kernel at 224 px.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from .rng import BLUR, uniform
from .stage import ViewStage, on_a_copy


def kernel_size_for(side: int) -> int:
    """About 10% of the side, odd, at least 3 (3 at 32 px, 23 at 224 px)."""
    return max(3, int(round(0.1 * side)) | 1)


@njit(cache=True, fastmath=True, error_model="numpy")
def gaussian_kernel(kernel_size, sigma):
    r = kernel_size // 2
    k = np.empty(kernel_size, np.float64)
    for t in range(kernel_size):
        d = (t - r) / sigma
        k[t] = math.exp(-0.5 * d * d)
    return (k / k.sum()).astype(np.float32)


@njit(cache=True, inline="always", error_model="numpy")
def _reflect(i, n):
    if i < 0:
        return -i
    if i >= n:
        return 2 * n - 2 - i
    return i


@njit(cache=True, fastmath=True, error_model="numpy")
def blur_inplace(img, kernel_size, sigma):
    h, w = img.shape[0], img.shape[1]
    flat = img.reshape(-1)
    n = w * 3
    k = gaussian_kernel(kernel_size, sigma)
    r = kernel_size // 2
    # Active taps only (symmetric, so a single cut-off radius).
    lo = 0
    while lo < r and k[lo] < 1e-7:
        lo += 1
    rr = r - lo  # effective radius
    # Reflection needs rr < side; tiny images get a truncated kernel instead of an error.
    cut = max(0, rr - (min(h, w) - 1))
    rr -= cut
    taps = k[lo + cut:kernel_size - lo - cut].copy()
    taps /= taps.sum()
    nt = taps.shape[0]
    padded = np.empty(n + 6 * rr, np.float32)
    tmp = np.empty(h * n, np.float32)
    # Horizontal pass: pad each row by reflection, then sum shifted copies (vectorises).
    # (Inner loops index slices from 0 so numba drops its negative-index checks and vectorises.)
    for y in range(h):
        src = flat[y * n:(y + 1) * n]
        mid = padded[3 * rr:3 * rr + n]
        for j in range(n):
            mid[j] = np.float32(src[j])
        for x in range(rr):
            for c in range(3):
                padded[3 * (rr - 1 - x) + c] = np.float32(src[3 * (x + 1) + c])
                padded[3 * (rr + w + x) + c] = np.float32(src[3 * (w - 2 - x) + c])
        row = tmp[y * n:(y + 1) * n]
        for j in range(n):
            row[j] = 0.0
        for t in range(nt):
            wt = taps[t]
            shifted = padded[3 * t:3 * t + n]
            for j in range(n):
                row[j] += wt * shifted[j]
    # Vertical pass back into the image.
    acc = np.empty(n, np.float32)
    half = np.float32(0.5)
    for y in range(h):
        for j in range(n):
            acc[j] = 0.0
        for t in range(nt):
            sy = _reflect(y + t - rr, h)
            wt = taps[t]
            src = tmp[sy * n:(sy + 1) * n]
            for j in range(n):
                acc[j] += wt * src[j]
        dst = flat[y * n:(y + 1) * n]
        for j in range(n):
            dst[j] = np.uint8(min(max(acc[j] + half, np.float32(0.0)), np.float32(255.0)))


def gaussian_blur(img, kernel_size, sigma):
    """Functional form (torchvision gaussian_blur with a square kernel and one sigma)."""
    if kernel_size <= 0 or kernel_size % 2 == 0:
        raise ValueError("gaussian_blur: kernel_size must be a positive odd integer")
    if sigma <= 0:
        raise ValueError("gaussian_blur: sigma must be positive")
    return on_a_copy(blur_inplace, img, kernel_size, sigma)


@njit(cache=True, error_model="numpy")
def blur_draw(key, p, sigma_lo, sigma_hi):
    return uniform(key, 0) < p, sigma_lo + (sigma_hi - sigma_lo) * uniform(key, 1)


class RandomBlur(ViewStage):
    """Blur each view with probability p (one number, or one per view) and sigma ~ U(sigma_range); the kernel
    size from each view's side (kernel_size_for) unless given."""

    family = BLUR

    def __init__(self, *, p=0.5, sigma=(0.1, 2.0), kernel_size=None, **kwargs):
        super().__init__(**kwargs)
        self.p = self.per_view(p)
        self.sigma = (float(sigma[0]), float(sigma[1]))
        sizes = [kernel_size_for(int(side)) if kernel_size is None else kernel_size for side in self.layout.sides]
        self.kernel_size = np.asarray(sizes, dtype=np.int64)

    def generate_code(self):
        p, ksize = self.p, self.kernel_size
        s_lo, s_hi = self.sigma

        def act(image, key, v):
            apply, sigma = blur_draw(key, p[v], s_lo, s_hi)
            if apply:
                blur_inplace(image, ksize[v], sigma)

        return self.per_view_code(act)
