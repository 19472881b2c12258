"""Fixture builders for the dataset-conversion tests: CIFAR folders in the official format, a small ImageFolder.

The official CIFAR archives are Python-2 pickles (protocol 2) in which every str is a byte string
(opcodes BINSTRING/SHORT_BINSTRING). Python 3's pickle writes bytes differently under protocol 2
(`_codecs.encode`), so `Py2Pickler` writes str and bytes the way Python 2 did; the numpy arrays
inside reduce exactly as numpy's own pickling does.
"""
from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import numpy as np


class Py2Pickler(pickle._Pickler):
    """Protocol-2 pickler that writes str and bytes as Python-2 byte strings."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str


def dump_py2(obj, path: Path) -> None:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    # numpy 1.x (which wrote the official files) named the reconstructor numpy.core.multiarray.
    Path(path).write_bytes(buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n"))


def cifar_batch(images: np.ndarray, labels: np.ndarray, label_key: bytes, name: str) -> dict:
    """Official batch dict from HWC images: b'data' rows are the R, G and B planes, each row-major."""
    data = np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), 3072))
    return {b"batch_label": name.encode(), label_key: [int(x) for x in labels], b"data": data,
            b"filenames": [f"img_{i:05d}.png".encode() for i in range(len(images))]}


def write_cifar_folder(root: Path, name: str, n_train: int, n_test: int, seed: int = 0,
                       dumper=dump_py2) -> dict:
    """Write cifar-10-batches-py/ or cifar-100-python/ under root; return the source arrays per split."""
    rng = np.random.default_rng(seed)
    num_classes = 10 if name == "cifar10" else 100
    src = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, num_classes, size=n)
        src[split] = (images, labels)
    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        parts = np.array_split(np.arange(n_train), 5)
        for b, idx in enumerate(parts, 1):
            dumper(cifar_batch(src["train"][0][idx], src["train"][1][idx], b"labels",
                               f"training batch {b} of 5"), folder / f"data_batch_{b}")
        dumper(cifar_batch(*src["test"], b"labels", "testing batch 1 of 1"), folder / "test_batch")
        names = [f"class{c}" for c in range(10)]
        dumper({b"label_names": names, b"num_cases_per_batch": 10000, b"num_vis": 3072}, folder / "batches.meta")
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True)
        for split in ("train", "test"):
            batch = cifar_batch(*src[split], b"fine_labels", split)
            batch[b"coarse_labels"] = [int(x) // 5 for x in src[split][1]]
            dumper(batch, folder / split)
        dumper({b"fine_label_names": [f"fine{c:03d}" for c in range(100)],
                b"coarse_label_names": [f"coarse{c:02d}" for c in range(20)]}, folder / "meta")
    return src


def write_image_folder(root: Path, split: str = "train") -> dict:
    """Crops of scikit-learn's two sample photos, varied sizes, JPEG and PNG, in 3 classes.

    Returns {relative path: (class name, RGB uint8 array as written)}; PNG is lossless, JPEG is not.
    """
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # two (427, 640, 3) uint8 photos
    spec = {"cat": [(0, 0, 0, 40, 56, "png"), (1, 100, 200, 33, 21, "jpg"), (0, 50, 300, 64, 48, "png")],
            "ant": [(1, 10, 10, 24, 24, "png"), (0, 200, 100, 48, 70, "jpg")],
            "bee": [(1, 300, 400, 70, 30, "png"), (0, 120, 500, 31, 45, "png"), (1, 5, 600, 20, 36, "jpg")]}
    out = {}
    for cls, crops in spec.items():
        (root / split / cls).mkdir(parents=True, exist_ok=True)
        for k, (photo, y, x, h, w, ext) in enumerate(crops):
            crop = np.ascontiguousarray(photos[photo][y:y + h, x:x + w])
            rel = f"{split}/{cls}/{k:02d}.{ext}"
            Image.fromarray(crop).save(root / rel, **({"quality": 95} if ext == "jpg" else {}))
            out[rel] = (cls, crop)
    return out
