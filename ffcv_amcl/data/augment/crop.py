"""Random resized crop: torchvision's parameter draw and an antialiased bilinear resize in numba.

The resize follows the triangle-filter scheme torchvision uses with `antialias=True` (the filter
widens with the downscale factor, so small crops of large photos do not alias). The decoder stage
(views.py) calls `resized_crop_into` directly on the decoded image, so a crop never copies it.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from .rng import uniform


@njit(cache=True, fastmath=True, error_model="numpy")
def _filter_taps(in_size, out_size):
    """Start index, tap count and normalised weights of each output pixel along one axis."""
    scale = in_size / out_size
    support = scale if scale >= 1.0 else 1.0
    inv = 1.0 / scale if scale >= 1.0 else 1.0
    max_taps = int(math.ceil(support)) * 2 + 1
    starts = np.empty(out_size, np.int64)
    counts = np.empty(out_size, np.int64)
    weights = np.zeros((out_size, max_taps), np.float32)
    for o in range(out_size):
        centre = scale * (o + 0.5)
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), in_size)
        n = hi - lo
        total = 0.0
        for t in range(n):
            x = abs((t + lo - centre + 0.5) * inv)
            w = 1.0 - x if x < 1.0 else 0.0
            weights[o, t] = w
            total += w
        if total > 0.0:
            for t in range(n):
                weights[o, t] = weights[o, t] / total
        starts[o] = lo
        counts[o] = n
    return starts, counts, weights


@njit(cache=True, fastmath=True, error_model="numpy")
def resized_crop_into(img, top, left, height, width, out):
    """Crop img[top:top+height, left:left+width] and resize it into `out` (both C-contiguous
    uint8 HWC).

    Both passes run along contiguous memory so they vectorise: the vertical pass filters whole
    source rows; its results are stored column-major (one column = all output rows of one source
    column), so the horizontal pass also adds whole contiguous columns, weighted per output column.
    """
    out_h, out_w = out.shape[0], out.shape[1]
    ys, yn, yw = _filter_taps(height, out_h)
    xs, xn, xw = _filter_taps(width, out_w)
    src = img.reshape(-1)
    dst = out.reshape(-1)
    stride = img.shape[1] * 3
    n = width * 3
    m = out_h * 3
    row = np.empty(n, np.float32)
    cols = np.empty((width, m), np.float32)  # cols[x, oy*3 + c]
    for oy in range(out_h):
        for j in range(n):
            row[j] = 0.0
        base = (top + ys[oy]) * stride + left * 3
        for t in range(yn[oy]):
            w = yw[oy, t]
            b = base + t * stride
            srow = src[b:b + n]  # slice from 0: no negative-index checks, vectorises
            for j in range(n):
                row[j] += w * np.float32(srow[j])
        for x in range(width):
            cols[x, 3 * oy] = row[3 * x]
            cols[x, 3 * oy + 1] = row[3 * x + 1]
            cols[x, 3 * oy + 2] = row[3 * x + 2]
    acc = np.empty(m, np.float32)
    half = np.float32(0.5)
    lo_v = np.float32(0.0)
    hi_v = np.float32(255.0)
    row_stride = out_w * 3
    for ox in range(out_w):
        for e in range(m):
            acc[e] = 0.0
        for t in range(xn[ox]):
            w = xw[ox, t]
            col = cols[xs[ox] + t]
            for e in range(m):
                acc[e] += w * col[e]
        d = dst[3 * ox:]
        for oy in range(out_h):
            o = oy * row_stride
            d[o] = np.uint8(min(max(acc[3 * oy] + half, lo_v), hi_v))
            d[o + 1] = np.uint8(min(max(acc[3 * oy + 1] + half, lo_v), hi_v))
            d[o + 2] = np.uint8(min(max(acc[3 * oy + 2] + half, lo_v), hi_v))


@njit(cache=True, fastmath=True, error_model="numpy")
def resized_crop(img, top, left, height, width, out_h, out_w):
    """Functional form: a new (out_h, out_w, 3) uint8 image, like torchvision's resized_crop
    with bilinear interpolation and antialias=True."""
    if height <= 0 or width <= 0 or out_h <= 0 or out_w <= 0:
        raise ValueError("resized_crop: crop and output sizes must be positive")
    out = np.empty((out_h, out_w, 3), np.uint8)
    img = np.ascontiguousarray(img)
    if top >= 0 and left >= 0 and top + height <= img.shape[0] and left + width <= img.shape[1]:
        resized_crop_into(img, top, left, height, width, out)
        return out
    # A box reaching past the border: the kernel reads raw memory, so pad with zeros (as
    # torchvision's crop does) instead of reading whatever lies beyond the image.
    box = np.zeros((height, width, 3), np.uint8)
    y0, y1 = max(top, 0), min(top + height, img.shape[0])
    x0, x1 = max(left, 0), min(left + width, img.shape[1])
    if y0 < y1 and x0 < x1:
        box[y0 - top:y1 - top, x0 - left:x1 - left] = img[y0:y1, x0:x1]
    resized_crop_into(box, 0, 0, height, width, out)
    return out


@njit(cache=True, fastmath=True, error_model="numpy")
def random_crop_params(key, height, width, scale_lo, scale_hi, log_ratio_lo, log_ratio_hi):
    """torchvision RandomResizedCrop.get_params: 10 tries of (area, log-uniform aspect), then
    its centre-crop fallback. Returns (top, left, h, w)."""
    area = height * width
    c = 0
    for _ in range(10):
        target = area * (scale_lo + (scale_hi - scale_lo) * uniform(key, c))
        aspect = math.exp(log_ratio_lo + (log_ratio_hi - log_ratio_lo) * uniform(key, c + 1))
        c += 2
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(uniform(key, c) * (height - h + 1))
            left = int(uniform(key, c + 1) * (width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    r_lo = math.exp(log_ratio_lo)
    r_hi = math.exp(log_ratio_hi)
    if in_ratio < r_lo:
        w = width
        h = int(round(w / r_lo))
    elif in_ratio > r_hi:
        h = height
        w = int(round(h * r_hi))
    else:
        w = width
        h = height
    return (height - h) // 2, (width - w) // 2, h, w


@njit(cache=True, fastmath=True, error_model="numpy")
def centre_crop_params(height, width, ratio):
    """Centred square of side ratio * min(height, width) (evaluation crop)."""
    side = max(1, int(round(ratio * min(height, width))))
    return (height - side) // 2, (width - side) // 2, side, side
