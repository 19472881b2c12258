"""A view's random draws recomputed from its stream (rng.stream_key), for tests that predict a pipeline's output.

Stream keys above 2**63 cannot cross from numba into Python, so each helper takes the stream's coordinates."""
import math

from numba import njit

from ffcv_amcl.data.augment import blur, crop, rng, solarization


@njit(cache=False)
def crop_params(seed, epoch, index, view, h, w, lo, hi):
    """(top, left, h, w) of view `view`'s random resized crop (aspect 3/4 .. 4/3)."""
    key = rng.stream_key(seed, epoch, index, view, rng.CROP)
    return crop.random_crop_params(key, h, w, lo, hi, math.log(3 / 4), math.log(4 / 3))


@njit(cache=False)
def blur_solarize_draws(seed, epoch, index, view, blur_p, solarize_p):
    """(blur applied, sigma, solarized) of view `view` with these probabilities (sigma ~ U(0.1, 2))."""
    apply, sigma = blur.blur_draw(rng.stream_key(seed, epoch, index, view, rng.BLUR), blur_p, 0.1, 2.0)
    return apply, sigma, solarization.solarize_draw(rng.stream_key(seed, epoch, index, view, rng.SOLARIZE), solarize_p)
