"""CIFAR-10/100 read straight from the official python-pickle folders, treating the pickles as untrusted.

The archives (https://www.cs.toronto.edu/~kriz/cifar.html) hold Python-2 pickles of dicts with
b'data' (N, 3072) uint8 rows (R plane, G plane, B plane, each 32x32 row-major) and b'labels'
(CIFAR-10) or b'fine_labels' (CIFAR-100). A pickle can name any callable and have it run, so the
unpickler below admits only the names those files use; anything else stops the load before a
single opcode of the file can call it.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ffcv_amcl.errors import UserError, check

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"

# name -> (folder inside data_dir, archive name, label key, class-name file, class-name key, train files, test files)
LAYOUTS = {
    "cifar10": ("cifar-10-batches-py", "cifar-10-python.tar.gz", b"labels", "batches.meta", b"label_names",
                [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]),
    "cifar100": ("cifar-100-python", "cifar-100-python.tar.gz", b"fine_labels", "meta", b"fine_label_names",
                 ["train"], ["test"]),
}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100}


def _latin1_encode(text, encoding="latin1"):
    """What Python 3 writes for bytes under pickle protocol <= 2: `_codecs.encode(text, 'latin1')`.

    Admitted so a re-pickled copy still loads; any other codec (zlib, bz2, ...) is refused.
    """
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise _Refused(f"it asks for _codecs.encode with codec {encoding!r}")
    return text.encode("latin1")


def _allowed():
    from numpy._core import multiarray

    return {
        ("numpy.core.multiarray", "_reconstruct"): multiarray._reconstruct,  # written by numpy < 2
        ("numpy._core.multiarray", "_reconstruct"): multiarray._reconstruct,  # written by numpy >= 2
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }


class _Refused(pickle.UnpicklingError):
    """The file names something an official CIFAR pickle never does."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only numpy array reconstruction; dicts, lists, bytes, str and ints need no lookup."""

    def find_class(self, module, name):
        fn = _allowed().get((module, name))
        if fn is None:
            raise _Refused(f"it asks for {module}.{name}")
        return fn


def load_pickle(path: Path) -> dict:
    """Load one CIFAR batch file as the official README says (Python-2 pickle, encoding='bytes')."""
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise UserError(f"CIFAR batch file {path} is missing: re-extract the archive from {CIFAR_URL}") from None
    except OSError as exc:
        raise UserError(f"cannot read CIFAR batch file {path}: {exc.strerror or exc}") from None
    except _Refused as exc:
        raise UserError(f"refusing to load {path}: {exc}, which an official CIFAR pickle never does "
                        f"(the file may run code); re-download it from {CIFAR_URL}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            OverflowError, MemoryError) as exc:
        raise UserError(f"CIFAR batch file {path} is truncated or corrupt ({type(exc).__name__}: {exc}): "
                        f"re-extract the archive from {CIFAR_URL}") from None
    check(isinstance(obj, dict), f"{path} is not a CIFAR batch (holds a {type(obj).__name__}, not a dict): "
                                 f"re-extract the archive from {CIFAR_URL}")
    return obj


def find_folder(name: str, data_dir: str | Path) -> Path:
    """`data_dir` may be the extracted folder itself or the folder that contains it."""
    folder, archive, *_ = LAYOUTS[name]
    data_dir = Path(data_dir)
    for candidate in (data_dir / folder, data_dir):
        if (candidate / LAYOUTS[name][6][0]).exists() or (candidate / LAYOUTS[name][5][0]).exists():
            return candidate
    raise UserError(f"no {name.upper()} folder at {data_dir / folder}: download {archive} from {CIFAR_URL} "
                    f"(python version) and extract it into {data_dir}")


def _batch_arrays(path: Path, obj: dict, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    bad = f"{path} is not a valid CIFAR batch"
    data, labels = obj.get(b"data"), obj.get(label_key)
    check(isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072,
          f"{bad} (b'data' must be a uint8 (N, 3072) array): re-extract the archive from {CIFAR_URL}")
    check(isinstance(labels, (list, np.ndarray)) and len(labels) == len(data),
          f"{bad} ({label_key!r} missing or not one label per image): re-extract the archive from {CIFAR_URL}")
    labels = np.asarray(labels)
    check(labels.ndim == 1 and np.issubdtype(labels.dtype, np.integer),
          f"{bad} ({label_key!r} must be integers): re-extract the archive from {CIFAR_URL}")
    out = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(out):
        raise UserError(f"{path}: label {labels[out[0]]} of image {out[0]} is out of range [0, {num_classes}), "
                        f"so this is not {'CIFAR-10' if num_classes == 10 else 'CIFAR-100'} data: "
                        f"re-extract the archive from {CIFAR_URL}")
    # (N, 3072) = (N, 3 planes, 32 rows, 32 cols) -> HWC, the layout RGBImageField stores.
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels.astype(np.int64)


def load_cifar(name: str, data_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Return images uint8 (N, 32, 32, 3), labels int64 (N,) and class names for cifar10|cifar100."""
    check(name in LAYOUTS, f"unknown CIFAR variant {name!r}: use cifar10 or cifar100")
    check(split in ("train", "test"), f"split {split!r} does not exist for {name}: use train or test")
    folder = find_folder(name, data_dir)
    _, _, label_key, meta_file, names_key, train_files, test_files = LAYOUTS[name]
    parts = [_batch_arrays(folder / f, load_pickle(folder / f), label_key, NUM_CLASSES[name])
             for f in (train_files if split == "train" else test_files)]
    images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    classes = [str(i) for i in range(NUM_CLASSES[name])]
    if (folder / meta_file).exists():  # class names only; their absence costs nothing else
        names = load_pickle(folder / meta_file).get(names_key)
        if isinstance(names, list) and len(names) == NUM_CLASSES[name]:
            classes = [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names]
    return images, labels, classes
