"""make_ssl_loader / make_eval_loader: output contract, epochs, bad input, the preview tool."""
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

from ffcv.loader.epoch_iterator import EpochIterator

from ffcv_amcl.data.loader import first_batch, make_eval_loader, make_ssl_loader
from ffcv_amcl.errors import UserError

pytestmark = pytest.mark.timeout(600)  # an FFCV worker exception would otherwise hang

MEAN = np.array([120.0, 110.0, 100.0])
STD = np.array([60.0, 55.0, 50.0])


def to_u8(x):
    """Undo the normalisation: (N, 3, H, W) float -> (N, H, W, 3) uint8."""
    x = x.permute(0, 2, 3, 1).numpy() * STD + MEAN
    return np.rint(x).astype(np.int64)


@pytest.fixture(scope="module")
def plain_loader(small_beton):
    # augs none: both views are the stored image (32 -> 32 is an exact resize).
    return make_ssl_loader(small_beton[0], 32, augs="none", num_workers=2, seed=4)


def test_ssl_contract_and_normalisation(small_beton, plain_loader):
    _, images, _ = small_beton
    L = plain_loader
    assert len(L) == 96 // 32 and L.batch_size == 32 and L.num_samples == 96
    batches = list(L)
    assert len(batches) == 3
    seen = []
    for a, b, y in batches:
        for v in (a, b):
            assert v.shape == (32, 3, 32, 32) and v.dtype == torch.float32
            assert v.is_contiguous(memory_format=torch.channels_last)
            assert v.device.type == "cpu"
        assert y.dtype == torch.int64 and y.shape == (32,)
        np.testing.assert_array_equal(to_u8(a), images[y.numpy()])
        np.testing.assert_array_equal(to_u8(b), images[y.numpy()])
        seen += y.tolist()
    assert sorted(seen) == list(range(96))


def test_epochs_shuffle_and_advance(plain_loader):
    L = plain_loader
    L.set_epoch(0)
    order0 = torch.cat([y for _, _, y in L]).tolist()
    assert L.epoch == 1  # a full iteration advances the epoch
    order1 = torch.cat([y for _, _, y in L]).tolist()
    L.set_epoch(0)
    again = torch.cat([y for _, _, y in L]).tolist()
    assert order0 == again and order0 != order1 and sorted(order0) == sorted(order1)


def epoch_threads():
    return [t for t in threading.enumerate() if isinstance(t, EpochIterator)]


def test_an_epoch_left_early_stops_its_thread(small_beton, monkeypatch):
    """12 batches, each made slow: the consumer leaves after the first, and the thread stops within a few batches
    (not at the epoch's end)."""
    from ffcv_amcl.data.loader import _GuardedEpochIterator

    loader = make_ssl_loader(small_beton[0], 8, augs="none", num_workers=1, seed=4)
    first_batch(loader)                                   # compiled: the batches below take the delay only
    made = []
    real = _GuardedEpochIterator.run_pipeline

    def slow(self, *args, **kwargs):
        made.append(threading.get_ident())
        time.sleep(0.2)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(_GuardedEpochIterator, "run_pipeline", slow)
    for _ in loader:
        break
    # the first, the queue ahead of it, one in flight and the call that ends the epoch: never all 12
    assert epoch_threads() == [] and len(made) <= 1 + loader._loader.batches_ahead + 3
    monkeypatch.undo()
    a, _, _ = first_batch(loader)
    assert a.shape[0] == 8 and epoch_threads() == []
    raw = loader._loader
    batches = iter(raw)
    next(batches)
    assert epoch_threads() == [batches]
    batches.close()
    assert epoch_threads() == [] and len(list(raw)) == 12      # the loader still runs whole epochs


def test_loaders_of_one_setting_share_the_stage_code_and_keep_their_own_seed(small_beton):
    """A second loader with the settings of the first compiles no stage again; its seed and epoch still reach the
    shared code at run time, and a changed setting (a probability) gets code of its own."""
    from ffcv_amcl.data.augment import shared_code

    def views(seed, **kw):
        loader = make_ssl_loader(small_beton[0], 16, augs="abcd", num_workers=1, seed=seed, order="sequential", **kw)
        return first_batch(loader)[:2]

    first = views(11)
    compiled = dict(shared_code._COMPILED)
    other, again = views(12), views(11)
    assert shared_code._COMPILED == compiled                          # the same settings: nothing compiled
    for a, b, c in zip(first, other, again):
        torch.testing.assert_close(a, c, atol=0, rtol=0)               # its own seed, exactly
        assert not torch.equal(a, b)
    views(11, blur_p=(0.3, 0.3))
    assert len(shared_code._COMPILED) > len(compiled)


def test_default_augs_views_repeat_per_epoch_and_differ(small_beton):
    L = make_ssl_loader(small_beton[0], 48, augs="default", augs_b="ae", num_workers=2, seed=9,
                        drop_last=False, crop_scale=(0.2, 1.0))
    assert len(L) == 2

    def run(epoch):
        L.set_epoch(epoch)
        out = {}
        for a, b, y in L:
            for k, i in enumerate(y.tolist()):
                out[i] = (a[k].clone(), b[k].clone())
        return out

    e0, e1, e0_again = run(0), run(1), run(0)
    assert len(e0) == 96
    for i in range(96):
        assert torch.equal(e0[i][0], e0_again[i][0]) and torch.equal(e0[i][1], e0_again[i][1])
        assert not torch.equal(e0[i][0], e0[i][1])
        assert not torch.equal(e0[i][0], e1[i][0])
    # The seed and the epoch's address reach the cached random helpers as plain int64, never as
    # literals: otherwise every run would compile and cache one more specialisation on disk.
    from numba import types
    from ffcv_amcl.data.augment import rng
    assert set(rng.read_counter.signatures) == {(types.int64,)}
    seeds = [sig[0] for sig in rng.stream_key.signatures]
    assert types.int64 in seeds and types.literal(9) not in seeds, seeds


def test_eval_loader(small_beton, jpeg_beton):
    _, images, _ = small_beton
    E = make_eval_loader(small_beton[0], 40, num_workers=1)
    assert len(E) == 3 and E.num_samples == 96
    got = [(x, y) for x, y in E]
    assert [len(y) for _, y in got] == [40, 40, 16]  # sequential, no drop_last
    x = torch.cat([x for x, _ in got])
    y = torch.cat([y for _, y in got])
    assert y.tolist() == list(range(96)) and x.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_array_equal(to_u8(x), images)
    # Variable-size JPEGs, label stored before image: centred square crops resized to 24 px.
    path, sources, _ = jpeg_beton
    E = make_eval_loader(path, 8, image_size=24, num_workers=2)
    x, y = next(iter(E))
    assert x.shape == (8, 3, 24, 24) and y.tolist() == list(range(8))


def _not_beton(tmp_path):
    p = tmp_path / "notes.beton"
    p.write_text("hello, I am not a dataset\n" * 10)
    return p


def _label_only(tmp_path):
    from ffcv.fields import IntField
    from ffcv.writer import DatasetWriter

    path = str(tmp_path / "labels.beton")
    DatasetWriter(path, {"label": IntField()}, num_workers=1).from_indexed_dataset(
        [(i,) for i in range(5)])
    return path


@pytest.mark.parametrize("kwargs,match", [
    (dict(augs="abz"), "unknown augmentation 'z'"),
    (dict(augs_b="q"), "unknown augmentation 'q'"),
    (dict(image_size=0), "image_size must be a positive integer"),
    (dict(image_size=-32), "image_size must be a positive integer"),
    (dict(crop_scale=(0.5, 0.1)), "crop_scale"),
    (dict(order="shuffled"), "unknown order"),
])
def test_bad_arguments(small_beton, kwargs, match):
    with pytest.raises(UserError, match=match):
        make_ssl_loader(small_beton[0], 8, **kwargs)


@pytest.mark.parametrize("ratio", [0, 1.5, -0.5])
def test_eval_loader_refuses_a_centre_crop_outside_the_image(small_beton, ratio):
    with pytest.raises(UserError, match=r"centre_ratio must be in \(0, 1\]"):
        make_eval_loader(small_beton[0], 8, centre_ratio=ratio)


def test_bad_files(tmp_path, small_beton):
    with pytest.raises(UserError, match="not found"):
        make_ssl_loader(tmp_path / "missing.beton", 8)
    with pytest.raises(UserError, match="not a readable .beton"):
        make_ssl_loader(_not_beton(tmp_path), 8)
    empty = tmp_path / "empty.beton"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match="not a readable .beton"):
        make_eval_loader(empty, 8)
    with pytest.raises(UserError, match="no RGB `image` field"):
        make_ssl_loader(_label_only(tmp_path), 8)
    with pytest.raises(UserError, match="image_size"):
        make_eval_loader(small_beton[0], 8, image_size=0)
    # Each message is one line naming cause and fix.
    try:
        make_ssl_loader(_not_beton(tmp_path), 8)
    except UserError as exc:
        assert "\n" not in str(exc) and "write_datasets.py" in str(exc)


def test_preview_writes_png_with_the_local_views(small_beton, tmp_path):
    """--local-crops 6: the stored image, views a and b and six local views (16 px at 32) side by side."""
    from PIL import Image

    out = tmp_path / "grid.png"
    r = subprocess.run([sys.executable, "-m", "ffcv_amcl.data.preview", "--path", small_beton[0],
                        "--augs", "abcdef", "--local-crops", "6", "--n", "2", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "2 images, views of 32 px, 6 local views of 16 px" in r.stdout
    with Image.open(out) as im:   # 9 columns of 1.5 in beside 2 rows of 1.5 in (3 columns would be narrower)
        assert im.width > 3 * im.height > 300


def test_preview_bad_input_one_line(tmp_path):
    out = tmp_path / "grid.png"
    r = subprocess.run([sys.executable, "-m", "ffcv_amcl.data.preview", "--path",
                        str(tmp_path / "nope.beton"), "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize("args,needle", [(["--out", "missing/grid.png"], "--out: directory "),
                                         (["--bogus", "1"], "unrecognized arguments: --bogus 1 (see --help)")])
def test_preview_refuses_flags_and_outputs_before_the_work(small_beton, tmp_path, args, needle):
    args = [str(tmp_path / a) if a.startswith("missing/") else a for a in args]
    r = subprocess.run([sys.executable, "-m", "ffcv_amcl.data.preview", "--path", small_beton[0], *args],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert needle in r.stderr and os.listdir(tmp_path) == []


@pytest.mark.gpu
def test_cuda_output_matches_cpu(small_beton):
    kw = dict(augs="abcde", num_workers=2, seed=2)
    cpu = next(iter(make_ssl_loader(small_beton[0], 16, **kw)))
    gpu = next(iter(make_ssl_loader(small_beton[0], 16, device="cuda", **kw)))
    for c, g in zip(cpu, gpu):
        assert g.device.type == "cuda"
        torch.testing.assert_close(g.cpu(), c)
    assert gpu[0].is_contiguous(memory_format=torch.channels_last)
