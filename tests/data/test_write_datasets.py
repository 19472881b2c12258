"""write_datasets.py and ffcv_amcl.data.{cifar,imagefolder,digits,write}: every source round-trips through a
.beton and FFCV's own readers return the source pixels and labels; bad input fails with one line and
leaves nothing behind; hostile pickles run nothing."""
from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ffcv_amcl.data.meta import read_meta
from ffcv_amcl.errors import UserError
from tests.data.conftest_datasets import cifar_batch, dump_py2, write_cifar_folder, write_image_folder

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable


# ---------------------------------------------------------------- readers (FFCV's, independent of our writer)

def read_with_loader(path):
    """All (images, labels) through FFCV's Loader in sequential order (fixed-size images only)."""
    from ffcv.fields.decoders import IntDecoder, SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption

    loader = Loader(str(path), batch_size=512, num_workers=1, order=OrderOption.SEQUENTIAL, drop_last=False,
                    pipelines={"image": [SimpleRGBImageDecoder()], "label": [IntDecoder()]})
    images, labels = [], []
    for img, lab in loader:
        images.append(np.array(img))
        labels.append(np.array(lab).reshape(-1))
    return np.concatenate(images), np.concatenate(labels)


def read_with_reader(path):
    """Variable-size images via FFCV's Reader: raw bytes reshaped, JPEG decoded with OpenCV."""
    import cv2
    from ffcv.reader import Reader

    r = Reader(str(path))
    assert r.field_names == ["image", "label"]
    blob = np.fromfile(str(path), dtype=np.uint8)
    sizes = {int(p): int(s) for p, s in zip(r.alloc_table["ptr"], r.alloc_table["size"])}
    images, modes = [], []
    image_md = r.metadata["f0"]  # Reader names metadata columns by position: f0 = image, f1 = label
    for row in image_md:
        ptr, h, w, mode = int(row["data_ptr"]), int(row["height"]), int(row["width"]), int(row["mode"])
        data = blob[ptr:ptr + sizes[ptr]]
        if mode == 1:  # raw
            images.append(data.reshape(h, w, 3))
        else:
            images.append(cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
        modes.append(mode)
    return images, np.asarray(r.metadata["f1"]), np.asarray(modes)


def pixel_stats(images):
    px = np.concatenate([np.asarray(i, np.float64).reshape(-1, 3) for i in images])
    return px.mean(0), px.std(0)


def assert_nothing_at(path: Path):
    assert not path.exists(), f"{path} was left behind"
    assert not Path(str(path) + ".json").exists()
    leftovers = [p.name for p in path.parent.iterdir() if path.name in p.name]
    assert leftovers == [], f"temporary files left: {leftovers}"


# ---------------------------------------------------------------- fixtures (module scope: built once)

@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    return root, {"cifar10": write_cifar_folder(root, "cifar10", 50, 20, seed=1),
                  "cifar100": write_cifar_folder(root, "cifar100", 40, 30, seed=2)}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagefolder")
    return root, write_image_folder(root, "train")


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("out")


def convert(name, data_dir, split, path, **kw):
    from ffcv_amcl.data.sources import open_source
    from ffcv_amcl.data.write import write_beton

    source, meta = open_source(name, data_dir, split, max_resolution=kw.get("max_resolution"),
                               subset=kw.pop("subset", -1))
    return write_beton(path, source, meta=meta, num_workers=2, **kw)


# ---------------------------------------------------------------- round trips

@pytest.mark.parametrize("name,split", [("cifar10", "train"), ("cifar100", "test")])
def test_cifar_round_trip_raw_is_pixel_exact(cifar, out_dir, name, split):
    root, src = cifar
    path = out_dir / f"{name}_{split}.beton"
    meta = convert(name, root, split, path)
    images, labels = read_with_loader(path)
    want_images, want_labels = src[name][split]
    assert images.shape == want_images.shape
    np.testing.assert_array_equal(images, want_images)  # batch order kept, planes -> HWC right
    np.testing.assert_array_equal(labels, want_labels)  # fine labels for cifar100, not coarse
    side = read_meta(path)
    assert side == json.loads(json.dumps(meta))
    assert side["num_samples"] == len(want_images) and side["dataset"] == name and side["split"] == split
    assert side["num_classes"] == (10 if name == "cifar10" else 100)
    assert side["classes"][:2] == (["class0", "class1"] if name == "cifar10" else ["fine000", "fine001"])
    mean, std = pixel_stats(want_images)
    np.testing.assert_allclose(side["mean"], mean, rtol=1e-9)
    np.testing.assert_allclose(side["std"], std, rtol=1e-9)


def test_python3_repickled_cifar_loads_too(tmp_path):
    """A batch re-saved by Python 3 (protocol 2 writes bytes via _codecs.encode) is still accepted."""
    from ffcv_amcl.data.cifar import load_cifar

    src = write_cifar_folder(tmp_path, "cifar10", 10, 6, seed=3,
                             dumper=lambda obj, p: Path(p).write_bytes(pickle.dumps(obj, protocol=2)))
    images, labels, classes = load_cifar("cifar10", tmp_path / "cifar-10-batches-py", "test")
    np.testing.assert_array_equal(images, src["test"][0])
    np.testing.assert_array_equal(labels, src["test"][1])
    assert classes[3] == "class3"


def test_digits_round_trip_and_split(out_dir):
    import torch

    from ffcv_amcl.data.digits import load_digits, split_indices
    from sklearn.datasets import load_digits as sk_digits

    path = out_dir / "digits_test.beton"
    convert("digits", None, "test", path)
    images, labels = read_with_loader(path)
    want_images, want_labels = load_digits("test")
    np.testing.assert_array_equal(images, want_images)
    np.testing.assert_array_equal(labels, want_labels)
    assert read_meta(path)["classes"] == [str(d) for d in range(10)]

    # Split: deterministic, disjoint, covers all 1797, stratified 80/20.
    sk = sk_digits()
    tr, te = split_indices(sk.target, "train"), split_indices(sk.target, "test")
    assert len(tr) == 1437 and len(te) == 360 and len(np.intersect1d(tr, te)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, te])), np.arange(1797))
    np.testing.assert_array_equal(te, split_indices(sk.target, "test"))
    frac = np.bincount(sk.target[te], minlength=10) / np.bincount(sk.target, minlength=10)
    assert np.all(np.abs(frac - 0.2) < 0.02)
    np.testing.assert_array_equal(want_labels, sk.target[te])

    # Upscale: torch's bilinear (align_corners=False) on the 0-16 images, scaled to 0-255, rounded.
    ref = torch.nn.functional.interpolate(torch.from_numpy(sk.images[te][:, None].astype(np.float64)),
                                          size=(32, 32), mode="bilinear", align_corners=False)[:, 0].numpy()
    ref = np.clip(np.rint(ref * 255 / 16), 0, 255).astype(np.uint8)
    for c in range(3):
        np.testing.assert_array_equal(want_images[..., c], ref)


def test_digits_jpg_mode_is_close(out_dir):
    from ffcv_amcl.data.digits import load_digits

    path = out_dir / "digits_test_jpg.beton"
    convert("digits", None, "test", path, write_mode="jpg", jpeg_quality=90)
    images, labels = read_with_loader(path)
    want_images, want_labels = load_digits("test")
    np.testing.assert_array_equal(labels, want_labels)
    diff = np.abs(images.astype(np.int16) - want_images).mean()
    assert 0 < diff < 3.0, diff  # JPEG: lossy, but close
    from ffcv.reader import Reader

    stored = lambda p: int(Reader(str(p)).alloc_table["size"].sum())  # noqa: E731
    assert stored(path) < stored(out_dir / "digits_test.beton") / 2  # really compressed


def test_imagefolder_round_trip(folder, out_dir):
    from PIL import Image

    root, src = folder
    path = out_dir / "folder_raw.beton"
    meta = convert("imagefolder", root, "train", path)
    images, labels, modes = read_with_reader(path)
    assert meta["classes"] == ["ant", "bee", "cat"] and meta["num_classes"] == 3
    rels = sorted(src, key=lambda r: (r.split("/")[1], r))  # class-sorted, then file-sorted
    assert len(images) == len(rels) == meta["num_samples"]
    assert np.all(modes == 1)
    for img, label, rel in zip(images, labels, rels):
        cls, crop = src[rel]
        assert label == meta["classes"].index(cls)
        if rel.endswith(".png"):
            np.testing.assert_array_equal(img, crop)
        else:  # JPEG: stored pixels are exactly PIL's decode of the file, and close to the crop
            np.testing.assert_array_equal(img, np.asarray(Image.open(root / rel).convert("RGB")))
            assert np.abs(img.astype(np.int16) - crop).mean() < 6
    mean, std = pixel_stats(images)
    np.testing.assert_allclose(read_meta(path)["mean"], mean, rtol=1e-9)
    np.testing.assert_allclose(read_meta(path)["std"], std, rtol=1e-9)


def test_imagefolder_jpg_mode_and_max_resolution(folder, out_dir):
    import cv2

    root, src = folder
    path = out_dir / "folder_jpg32.beton"
    meta = convert("imagefolder", root, "train", path, write_mode="jpg", max_resolution=32, jpeg_quality=95)
    images, labels, modes = read_with_reader(path)
    assert np.all(modes == 0)
    rels = sorted(src, key=lambda r: (r.split("/")[1], r))
    for img, rel in zip(images, rels):
        crop = src[rel][1]
        h, w = crop.shape[:2]
        if max(h, w) > 32:  # longer side shrunk to 32, aspect kept (ffcv truncates the scaled sizes)
            assert max(img.shape[:2]) == 32
            assert img.shape[:2] == (int(32 / max(h, w) * h), int(32 / max(h, w) * w))
            if rel.endswith(".png"):  # reference: area-average resize of the lossless source
                ref = cv2.resize(crop, img.shape[1::-1], interpolation=cv2.INTER_AREA)
                assert np.abs(img.astype(np.int16) - ref).mean() < 4
        else:
            assert img.shape == crop.shape
    assert meta["num_samples"] == len(rels)


def test_proportion_mode_is_reproducible(out_dir):
    paths = [out_dir / f"digits_prop{k}.beton" for k in range(2)]
    for p in paths:
        convert("digits", None, "test", p, write_mode="proportion", compress_probability=0.5)
    (_, l0, m0), (_, l1, m1) = read_with_reader(paths[0]), read_with_reader(paths[1])
    np.testing.assert_array_equal(m0, m1)
    assert 0.35 < (m0 == 0).mean() < 0.65


def test_subset_is_seeded_and_spans_classes(folder):
    from ffcv_amcl.data.sources import open_source

    root, _ = folder
    a, _ = open_source("imagefolder", root, "train", subset=5)
    b, _ = open_source("imagefolder", root, "train", subset=5)
    assert len(a) == 5
    np.testing.assert_array_equal(a.indices, b.indices)
    assert np.all(np.diff(a.indices) > 0)
    assert len(set(a.labels.tolist())) > 1


def test_write_beton_accepts_pil_and_grey(tmp_path):
    from PIL import Image

    from ffcv_amcl.data.write import write_beton

    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    items = [(Image.fromarray(rgb), 1), (grey, 0), (Image.fromarray(grey), np.int64(2))]
    path = tmp_path / "mixed.beton"
    write_beton(path, items, num_workers=1, meta={"num_classes": 3})
    images, labels, _ = read_with_reader(path)
    np.testing.assert_array_equal(images[0], rgb)
    np.testing.assert_array_equal(images[1], np.repeat(grey[..., None], 3, -1))
    np.testing.assert_array_equal(images[2], np.repeat(grey[..., None], 3, -1))
    np.testing.assert_array_equal(labels, [1, 0, 2])


# ---------------------------------------------------------------- hostile pickles

class _RunsCode:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


@pytest.mark.parametrize("payload", ["system", "open", "eval", "reconstructor"])
def test_pickle_that_runs_code_is_refused(tmp_path, payload):
    import copyreg

    from ffcv_amcl.data.cifar import load_pickle

    marker = tmp_path / "pwned"
    evil = {"system": _RunsCode(os.system, f"touch {marker}"),
            "open": _RunsCode(open, str(marker), "w"),
            "eval": _RunsCode(eval, f"open({str(marker)!r}, 'w')"),
            "reconstructor": _RunsCode(copyreg._reconstructor, object, object, None)}[payload]
    bad = tmp_path / "data_batch_1"
    bad.write_bytes(pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [evil]}, protocol=2))
    with pytest.raises(UserError, match=r"refusing to load .*data_batch_1.*asks for"):
        load_pickle(bad)
    assert not marker.exists()


def test_codecs_other_than_latin1_are_refused(tmp_path):
    from ffcv_amcl.data.cifar import load_pickle

    # Hand-built protocol-2 stream: _codecs.encode('x', 'rot13') -- admitted name, refused codec.
    raw = (b"\x80\x02c_codecs\nencode\nq\x00X\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R.")
    p = tmp_path / "test_batch"
    p.write_bytes(raw)
    with pytest.raises(UserError, match=r"refusing to load .*test_batch: it asks for _codecs.encode with codec"):
        load_pickle(p)


# ---------------------------------------------------------------- interrupted / failed writes

class _Breaks:
    def __init__(self, at, exc):
        self.at, self.exc = at, exc

    def __len__(self):
        return 300

    def __getitem__(self, i):
        if i == self.at:
            raise self.exc
        return np.full((8, 8, 3), i % 256, np.uint8), i % 3


@pytest.mark.timeout(120)
@pytest.mark.parametrize("exc,expect", [(RuntimeError("disk on fire"), RuntimeError),
                                        (UserError("cannot read image x.jpg"), UserError)])
def test_source_failing_midway_leaves_nothing(tmp_path, exc, expect):
    from ffcv_amcl.data.write import write_beton

    path = tmp_path / "broken.beton"
    with pytest.raises(expect, match=str(exc)):
        write_beton(path, _Breaks(150, exc), num_workers=2, meta={"num_classes": 3})
    assert_nothing_at(path)


class _KillsWorker(_Breaks):
    """Dies like an out-of-memory kill inside a writer process."""

    def __getitem__(self, i):
        if i == self.at:
            os.kill(os.getpid(), 9)
        return super().__getitem__(i)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["encoder_raises", "worker_killed"])
def test_dead_writer_process_fails_instead_of_hanging(tmp_path, monkeypatch, how):
    from ffcv.fields import RGBImageField

    from ffcv_amcl.data.write import write_beton

    source = _Breaks(-1, None)
    if how == "encoder_raises":  # an error inside FFCV's own encode, past our per-sample checks
        encode = RGBImageField.encode

        def failing(self, destination, image, malloc):
            if image[0, 0, 0] == 77:
                raise ValueError("encoder broke")
            return encode(self, destination, image, malloc)

        monkeypatch.setattr(RGBImageField, "encode", failing)
    else:
        source = _KillsWorker(77, None)
    path = tmp_path / "dead.beton"
    with pytest.raises(UserError, match=r"exited with code (1|-9)"):
        write_beton(path, source, num_workers=2, meta={"num_classes": 3})
    assert_nothing_at(path)


def test_interrupt_keeps_the_previous_file(tmp_path, monkeypatch):
    import ffcv.writer

    from ffcv_amcl.data.write import ArrayDataset, write_beton

    path = tmp_path / "keep.beton"
    data = ArrayDataset(np.zeros((20, 4, 4, 3), np.uint8), np.zeros(20, np.int64))
    write_beton(path, data, num_workers=1, meta={"num_classes": 1})
    before = path.read_bytes()

    def interrupted(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(ffcv.writer.DatasetWriter, "finalize", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_beton(path, data, num_workers=1, meta={"num_classes": 1})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.beton", "keep.beton.json"]


def test_label_out_of_range_found_before_writing(tmp_path, monkeypatch):
    import ffcv.writer

    from ffcv_amcl.data.write import ArrayDataset, write_beton

    monkeypatch.setattr(ffcv.writer.DatasetWriter, "__init__", lambda *a, **k: pytest.fail("writer started"))
    path = tmp_path / "labels.beton"
    data = ArrayDataset(np.zeros((5, 4, 4, 3), np.uint8), np.array([0, 1, 10, 2, 3]))
    with pytest.raises(UserError, match=r"label 10 of sample 2 is out of range \[0, 10\)"):
        write_beton(path, data, meta={"num_classes": 10})
    assert_nothing_at(path)


def test_label_out_of_range_from_an_opaque_source(tmp_path):
    from ffcv_amcl.data.write import write_beton

    path = tmp_path / "labels2.beton"
    items = [(np.zeros((4, 4, 3), np.uint8), k) for k in (0, 1, 2, 7)]
    with pytest.raises(UserError, match=r"sample 3: label 7 is out of range \[0, 3\)"):
        write_beton(path, items, num_workers=1, meta={"num_classes": 3})
    assert_nothing_at(path)


# ---------------------------------------------------------------- the command line

def run_cli(*args, cwd=None):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("FFCV_AMCL_DEBUG", None)
    return subprocess.run([PY, str(REPO / "write_datasets.py"), *args], capture_output=True, text=True,
                          cwd=cwd or REPO, env=env, timeout=300)


def test_cli_digits_with_config_file(tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"cfg": {"dataset": "digits", "split": "train",
                                       "write_path": str(tmp_path / "ignored.beton")}}))
    path = tmp_path / "digits_train.beton"
    dead = int(subprocess.run([PY, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout)
    stale = tmp_path / f".digits_train.beton.tmp-{dead}"  # what a killed writer leaves: removed on start
    stale.write_bytes(b"\0" * 4096)
    res = run_cli("--config-file", str(cfg), f"--cfg.write_path={path}", "--cfg.num_workers=2")
    assert res.returncode == 0, res.stderr
    assert not stale.exists() and f"note: removed {stale}" in res.stderr
    assert "images/s" in res.stdout and "wrote 1437 images" in res.stdout
    assert path.exists() and not (tmp_path / "ignored.beton").exists()
    side = read_meta(path)
    assert side["num_samples"] == 1437 and side["dataset"] == "digits" and side["split"] == "train"


def _corrupt_folder(base: Path, cifar_root: Path, case: str):
    """Return (cli args, expected message regex, marker file that must not appear)."""
    c10 = cifar_root / "cifar-10-batches-py"
    work = base / "src"
    marker = base / "pwned"
    if case == "missing_folder":
        work.mkdir()
        return ["--cfg.dataset=cifar10", f"--cfg.data_dir={work}"], \
            r"no CIFAR10 folder .*cifar-10-python\.tar\.gz.*cs\.toronto\.edu", None
    if case in ("missing_batch", "truncated_batch", "label_out_of_range", "code_in_pickle"):
        shutil.copytree(c10, work / "cifar-10-batches-py")
        b = work / "cifar-10-batches-py" / "data_batch_3"
        if case == "missing_batch":
            b.unlink()
            return ["--cfg.dataset=cifar10", f"--cfg.data_dir={work}"], r"data_batch_3 is missing", None
        if case == "truncated_batch":
            b.write_bytes(b.read_bytes()[: b.stat().st_size // 2])
            return ["--cfg.dataset=cifar10", f"--cfg.data_dir={work}"], r"data_batch_3 is truncated", None
        if case == "label_out_of_range":
            dump_py2(cifar_batch(np.zeros((4, 32, 32, 3), np.uint8), [1, 2, 10, 3], b"labels", "x"), b)
            return ["--cfg.dataset=cifar10", f"--cfg.data_dir={work}"], \
                r"data_batch_3: label 10 of image 2 is out of range \[0, 10\)", None
        b.write_bytes(pickle.dumps({b"data": _RunsCode(os.system, f"touch {marker}")}, protocol=2))
        return ["--cfg.dataset=cifar10", f"--cfg.data_dir={work}"], \
            r"refusing to load .*data_batch_3.*(posix|os)\.system", marker
    if case == "unreadable_image":
        (work / "train" / "a").mkdir(parents=True)
        (work / "train" / "b").mkdir(parents=True)
        from PIL import Image
        Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(work / "train" / "a" / "ok.png")
        (work / "train" / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
        return ["--cfg.dataset=imagefolder", f"--cfg.data_dir={work}"], r"cannot read image .*b/broken\.jpg", None
    if case == "unknown_dataset":
        return ["--cfg.dataset=mnist"], r"unknown dataset 'mnist'.*cifar10, cifar100, imagefolder, digits", None
    if case == "missing_split_flag":
        return ["--cfg.dataset=digits"], r"--cfg\.split is required", None
    if case == "missing_config_file":
        return ["--config-file", str(base / "nope.json")], r"cannot read --config-file .*nope\.json", None
    if case == "bad_int_flag":
        return ["--cfg.dataset=digits", "--cfg.max_resolution=big"], r"--cfg\.max_resolution='big' is not an int", None
    raise AssertionError(case)


BAD_CASES = ["missing_folder", "missing_batch", "truncated_batch", "label_out_of_range", "code_in_pickle",
             "unreadable_image", "unknown_dataset", "write_dir_missing", "missing_split_flag", "bad_int_flag",
             "missing_config_file"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_cli_bad_input_one_line_nonzero_nothing_written(tmp_path, cifar, case):
    out = tmp_path / "out"
    out.mkdir()
    path = out / "x.beton"
    if case == "write_dir_missing":
        path = tmp_path / "no_such_dir" / "x.beton"
        args, pattern, marker = ["--cfg.dataset=digits"], r"directory .*no_such_dir does not exist", None
    else:
        args, pattern, marker = _corrupt_folder(tmp_path, cifar[0], case)
    split = [] if case == "missing_split_flag" else ["--cfg.split=train"]
    res = run_cli(*args, *split, f"--cfg.write_path={path}")
    assert res.returncode != 0
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert re.search(pattern, errors[0]), errors[0]
    if path.parent.exists():
        assert_nothing_at(path)
    if marker is not None:
        assert not marker.exists()
