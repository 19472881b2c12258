"""The random stages: draw rates and ranges, per-image reproducibility, view isolation, multi-crop.

Rates are checked on the numba draw functions over >= 10,000 streams (the exact functions the
stages call), and a few pipelines are run end to end to tie the stages to those draws.
"""
import math

import numpy as np
import pytest
import torch
from numba import njit

from ffcv_amcl.data import augment as A
from ffcv_amcl.data.augment import blur, colour, crop, flip, rng, solarization
from ffcv_amcl.data.loader import build_image_pipeline, by_name
from tests.data.streams import blur_solarize_draws, crop_params

N = 20_000
# An exception inside an FFCV worker thread leaves the loader waiting forever: fail instead.
pytestmark = pytest.mark.timeout(600)


@njit(cache=False)
def _draw_all(n, seed, epoch):
    """One row per sample index: flip, gray, jitter apply, blur apply, sigma, jitter factors, solarize."""
    out = np.empty((n, 10))
    for i in range(n):
        out[i, 0] = flip.flip_draw(rng.stream_key(seed, epoch, i, 0, rng.FLIP), 0.5)
        out[i, 1] = colour.gray_draw(rng.stream_key(seed, epoch, i, 0, rng.GRAY), 0.2)
        apply, order, fb, fc, fs, fh = colour.jitter_draw(
            rng.stream_key(seed, epoch, i, 0, rng.JITTER), 0.8, 0.5)
        out[i, 2] = apply
        b_apply, sigma = blur.blur_draw(rng.stream_key(seed, epoch, i, 0, rng.BLUR), 0.5, 0.1, 2.0)
        out[i, 3] = b_apply
        out[i, 4] = sigma
        out[i, 5], out[i, 6], out[i, 7], out[i, 8] = fb, fc, fs, fh
        out[i, 9] = solarization.solarize_draw(rng.stream_key(seed, epoch, i, 0, rng.SOLARIZE), 0.2)
    return out


@njit(cache=False)
def _orders(n):
    out = np.empty((n, 4), np.int64)
    for i in range(n):
        out[i] = colour.jitter_draw(rng.stream_key(1, 0, i, 1, rng.JITTER), 0.8, 0.5)[1]
    return out


@njit(cache=False)
def _crops(n, h, w, lo, hi):
    out = np.empty((n, 4), np.int64)
    lr0, lr1 = math.log(3 / 4), math.log(4 / 3)
    for i in range(n):
        t, l, ch, cw = crop.random_crop_params(rng.stream_key(0, 0, i, 0, rng.CROP), h, w, lo, hi, lr0, lr1)
        out[i, 0], out[i, 1], out[i, 2], out[i, 3] = t, l, ch, cw
    return out


@njit(cache=False)
def _flip_gray(seed, epoch, i):
    return (flip.flip_draw(rng.stream_key(seed, epoch, i, 0, rng.FLIP), 0.5),
            colour.gray_draw(rng.stream_key(seed, epoch, i, 0, rng.GRAY), 0.2))


@pytest.fixture(scope="module")
def draws():
    return _draw_all(N, 7, 3)


@pytest.mark.parametrize("col,p", [(0, 0.5), (1, 0.2), (2, 0.8), (3, 0.5), (9, 0.2)])
def test_rates(draws, col, p):
    assert abs(draws[:, col].mean() - p) <= 0.02


def test_rates_independent_between_families(draws):
    # Each family has its own stream: flip and gray decisions are uncorrelated.
    both = (draws[:, 0] * draws[:, 1]).mean()
    assert abs(both - 0.5 * 0.2) <= 0.02


def test_jitter_and_blur_parameter_ranges(draws):
    s = 0.5
    for col in (5, 6, 7):
        f = draws[:, col]
        assert f.min() >= 1 - 0.8 * s and f.max() <= 1 + 0.8 * s
        assert abs(f.mean() - 1.0) < 0.02 and f.std() > 0.2  # spread over the range, U(0.6, 1.4)
    hue = draws[:, 8]
    assert hue.min() >= -0.2 * s and hue.max() <= 0.2 * s and abs(hue.mean()) < 0.005
    sigma = draws[:, 4]
    assert sigma.min() >= 0.1 and sigma.max() <= 2.0 and abs(sigma.mean() - 1.05) < 0.02


def test_jitter_order_is_a_uniform_random_permutation():
    orders = _orders(24_000)
    assert (np.sort(orders, axis=1) == np.arange(4)).all()
    _, counts = np.unique(orders, axis=0, return_counts=True)
    assert len(counts) == 24 and counts.min() > 800 and counts.max() < 1200  # ~1000 each


@pytest.mark.parametrize("h,w", [(32, 32), (60, 90), (300, 200)])
def test_crop_params_match_torchvision_distribution(h, w):
    from torchvision.transforms.v2 import RandomResizedCrop

    ours = _crops(N, h, w, 0.08, 1.0)
    t, l, ch, cw = ours.T
    assert (t >= 0).all() and (l >= 0).all() and (t + ch <= h).all() and (l + cw <= w).all()
    assert (ch > 0).all() and (cw > 0).all()
    area = ch * cw / (h * w)
    logr = np.log(cw / ch)
    # Ranges, up to the rounding of h and w to whole pixels.
    assert area.min() >= 0.08 * 0.8 and area.max() <= 1.0
    inside = area > 0.2  # rounding matters little there
    assert np.abs(logr[inside]).max() <= math.log(4 / 3) + 0.1
    # Not biased to squares: the log aspect ratio spreads over its range like torchvision's.
    torch.manual_seed(0)
    ref = np.array([RandomResizedCrop.get_params(torch.empty(3, h, w), [0.08, 1.0], [3 / 4, 4 / 3])
                    for _ in range(N)])
    ref_area = ref[:, 2] * ref[:, 3] / (h * w)
    ref_logr = np.log(ref[:, 3] / ref[:, 2])
    assert abs(area.mean() - ref_area.mean()) < 0.015
    assert abs(np.abs(logr).mean() - np.abs(ref_logr).mean()) < 0.01
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        assert abs(np.quantile(logr, q) - np.quantile(ref_logr, q)) < 0.03
        assert abs(np.quantile(area, q) - np.quantile(ref_area, q)) < 0.03
    square = np.mean(np.abs(logr) < 0.05)
    assert square < 0.25  # a square-biased draw would pile up here


def test_crop_scale_is_honoured():
    c = _crops(5000, 100, 100, 0.5, 0.6)
    area = c[:, 2] * c[:, 3] / 1e4
    assert area.min() > 0.47 and area.max() < 0.63


def test_centre_crop_fallback():
    # A 10x100 strip cannot hold any aspect in (3/4, 4/3) with a large area: torchvision falls back
    # to a centred crop with the closest allowed aspect ratio.
    c = _crops(200, 10, 100, 0.9, 1.0)
    assert (c[:, 2] == 10).all() and (c[:, 3] == round(10 * 4 / 3)).all()
    assert (c[:, 1] == (100 - 13) // 2).all()


def test_streams_depend_on_every_coordinate():
    keys = {rng.draw(s, e, i, v, f, 0) for s in (0, 1) for e in (0, 1)
            for i in (0, 1, 2**40) for v in (0, 1) for f in (rng.CROP, rng.FLIP)}
    assert len(keys) == 2 * 2 * 3 * 2 * 2
    u = np.array([rng.draw(0, 0, 5, 0, 1, c) for c in range(20000)])
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.01


# ---- end to end through FFCV: uint8 views straight from the stages --------------------------

def _run(path, augs_a, augs_b, *, workers, seed, epochs=(0,), batch_size=32, **views):
    """{epoch: {sample index: (view a, view b, local views...)}} from a raw FFCV loader with our stages;
    `views`: the ViewRecipe's other settings (local_crops, blur_p, ...)."""
    from ffcv.fields.basics import IntDecoder
    from ffcv.loader import Loader, OrderOption

    counter = A.EpochCounter(0)
    recipe = A.ViewRecipe(A.parse_augs(augs_a), A.parse_augs(augs_b), 32, **views)
    layout = recipe.layout()
    ops = build_image_pipeline(recipe, seed=seed, epoch_address=counter.address)
    loader = Loader(path, batch_size=batch_size, num_workers=workers, order=OrderOption.RANDOM,
                    seed=seed, drop_last=False,
                    pipelines={"image": ops, "label": [IntDecoder()]})
    result = {}
    for e in epochs:
        counter.value = e
        loader.next_epoch = e
        views_of = {}
        for images, labels in loader:
            per_view = [layout.images(images, v) for v in range(len(layout))]
            for k, lab in enumerate(labels.reshape(-1)):
                views_of[int(lab)] = tuple(v[k] for v in per_view)
        result[e] = views_of
    return result


@pytest.fixture(scope="module")
def all_w1(small_beton):
    return _run(small_beton[0], "abcdef", "abcdef", workers=1, seed=11, epochs=(0, 1))


def test_seeded_runs_repeat_for_one_and_two_workers(small_beton, all_w1):
    # Different batch size too: the streams must not depend on batch composition.
    w2 = _run(small_beton[0], "abcdef", "abcdef", workers=2, seed=11, epochs=(0, 1), batch_size=20)
    for e in (0, 1):
        assert set(w2[e]) == set(all_w1[e]) == set(range(96))
        for i in range(96):
            np.testing.assert_array_equal(w2[e][i][0], all_w1[e][i][0])
            np.testing.assert_array_equal(w2[e][i][1], all_w1[e][i][1])


def test_multi_crop_repeats_for_one_and_two_workers_and_keeps_the_global_views(small_beton, all_w1):
    """Six local views: the same views for 1 and 2 workers (other batch sizes), and the global views are those of
    the two-view pipeline (local_crops does not shift any stream)."""
    runs = [_run(small_beton[0], "abcdef", "abcdef", workers=w, seed=11, batch_size=b, local_crops=6)[0]
            for w, b in ((1, 32), (2, 20))]
    for i in range(96):
        one, two = runs[0][i], runs[1][i]
        assert len(one) == 8 and [v.shape for v in one] == [(32, 32, 3)] * 2 + [(16, 16, 3)] * 6
        for v in range(8):
            np.testing.assert_array_equal(one[v], two[v])
        np.testing.assert_array_equal(one[0], all_w1[0][i][0])
        np.testing.assert_array_equal(one[1], all_w1[0][i][1])
        assert len({v.tobytes() for v in one[2:]}) == 6        # each local view has its own stream


def test_views_differ_and_epochs_differ(all_w1):
    e0, e1 = all_w1[0], all_w1[1]
    assert all(not np.array_equal(e0[i][0], e0[i][1]) for i in range(96))
    assert all(not np.array_equal(e0[i][0], e1[i][0]) for i in range(96))
    assert all(v.shape == (32, 32, 3) and v.dtype == np.uint8 for i in range(96) for v in e0[i])


def test_stages_match_their_draws_end_to_end(small_beton):
    """Colour drop + flip on view a only: each image's outcome is exactly what its stream says,
    and view b (no augmentation, 32 -> 32 resize is exact) is the stored image untouched."""
    path, images, _ = small_beton
    seed, epoch = 5, 2
    views = _run(path, "ce", "none", workers=2, seed=seed, epochs=(epoch,))[epoch]
    flips = grays = 0
    for i, (a, b) in views.items():
        np.testing.assert_array_equal(b, images[i])
        expect = images[i]
        do_flip, do_gray = _flip_gray(seed, epoch, i)
        if do_flip:
            expect = A.hflip(expect)
            flips += 1
        if do_gray:
            expect = A.rgb_to_grayscale(expect)
            grays += 1
        np.testing.assert_array_equal(a, expect)
    assert 20 < flips < 76 and 3 < grays < 45  # both branches were exercised


def test_per_view_probabilities_and_local_views_follow_their_draws(small_beton):
    """Blur p = (1, 0) and solarization p = (0.25, 0.75), two local views (which take view b's): every view is
    exactly the functional forms applied as its own streams draw them, with its own probability; the local views
    are random resized crops of local_scale resized to local_size."""
    path, images, _ = small_beton
    seed, epoch, blur_p, solarize_p = 4, 1, (1.0, 0.0), (0.25, 0.75)
    views = _run(path, "bf", "bf", workers=2, seed=seed, epochs=(epoch,), local_crops=2, local_size=16,
                 local_scale=(0.2, 0.6), blur_p=blur_p, solarize_p=solarize_p)[epoch]
    counts = np.zeros((4, 2))
    for i, got in views.items():
        for v in range(4):
            image = images[i]
            if v >= 2:
                top, left, h, w = crop_params(seed, epoch, i, v, 32, 32, 0.2, 0.6)
                image = A.resized_crop(image, top, left, h, w, 16, 16)
            blurred, sigma, solarized = blur_solarize_draws(seed, epoch, i, v, blur_p[min(v, 1)],
                                                            solarize_p[min(v, 1)])
            if blurred:
                image = A.gaussian_blur(image, A.kernel_size_for(image.shape[0]), sigma)
            if solarized:
                image = A.solarize(image, 128)
            np.testing.assert_array_equal(got[v], image)
            counts[v] += blurred, solarized
    assert counts[0, 0] == 96 and counts[1:, 0].sum() == 0               # blur: always on view a, never on b
    assert 10 < counts[0, 1] < 40 and all(55 < c < 90 for c in counts[1:, 1])   # 0.25 on a, 0.75 on b and locals


def test_inplace_stages_on_one_view_never_touch_the_other(small_beton):
    path, images, _ = small_beton
    views = _run(path, "bcdef", "", workers=2, seed=3)[0]
    changed = 0
    for i, (a, b) in views.items():
        np.testing.assert_array_equal(b, images[i])
        changed += not np.array_equal(a, images[i])
    assert changed > 80  # view a was really augmented in place


def test_jpeg_decoded_once_per_sample(jpeg_beton, monkeypatch):
    """Count the decoder's imdecode calls: one per sample, though four views of two sizes are produced."""
    from ffcv.libffcv import imdecode as real_imdecode
    from ffcv.fields.basics import IntDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv_amcl.data.augment import views as views_mod

    count = np.zeros(1, np.int64)
    address = count.ctypes.data
    real = njit(real_imdecode)

    @njit
    def bump():
        cell = rng.numba.carray(rng._voidptr_from_address(address), (1,), np.int64)
        cell[0] += 1

    def counting_imdecode(source, dst, h, w, ch, cw, ox, oy, num, den, crop, flip_):
        bump()  # plain function like ffcv's own imdecode: the decoder compiles it with numba
        return real(source, dst, h, w, ch, cw, ox, oy, num, den, crop, flip_)

    monkeypatch.setattr(views_mod, "imdecode", counting_imdecode)
    path, sources, _ = jpeg_beton
    counter = A.EpochCounter(0)
    layout = A.ViewLayout([48, 48, 20, 20])
    loader = Loader(path, batch_size=8, num_workers=1, order=OrderOption.SEQUENTIAL,
                    pipelines={"image": [A.MultiViewDecoder(layout, seed=0, epoch_address=counter.address,
                                                            random_crop=(False,) * 4)],
                               "label": [IntDecoder()]})
    seen = 0
    for batch in loader:
        named = by_name(loader, batch)
        imgs, labels = named["image"], named["label"]
        views = [layout.images(imgs, v) for v in range(4)]
        for k, lab in enumerate(labels.reshape(-1)):
            src = sources[int(lab)]
            for v, side in enumerate((48, 48, 20, 20)):
                ref = A.resized_crop(src, 0, 0, src.shape[0], src.shape[1], side, side)
                assert np.abs(views[v][k].astype(float) - ref).mean() < 6  # JPEG loss only
            np.testing.assert_array_equal(views[0][k], views[1][k])
            np.testing.assert_array_equal(views[2][k], views[3][k])
            seen += 1
    assert seen == 24 and count[0] == 24
