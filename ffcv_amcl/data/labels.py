"""Labelled and unlabelled .beton files: an unlabelled set (write_datasets.py --cfg.labels=none) stores the label
UNLABELLED for every image and its sidecar says `"labelled": false` (no classes). It trains like any other set;
what needs labels (the kNN monitor, the online probe, eval.py) refuses it with one line naming the setting to use.
A .beton whose sidecar lacks the key, or that has no sidecar, counts as labelled.
"""
from __future__ import annotations

import os

import numpy as np

from ffcv_amcl.data.meta import read_meta
from ffcv_amcl.errors import check

UNLABELLED = -1


def label_bounds(meta: dict) -> tuple[int, int]:
    """[lo, hi) of the labels a sidecar allows: [0, num_classes) (unbounded above without a class count), or
    UNLABELLED alone for an unlabelled set (meta "labelled": false)."""
    if meta.get("labelled", True) is False:
        return UNLABELLED, UNLABELLED + 1
    num_classes = meta.get("num_classes")
    return 0, num_classes if isinstance(num_classes, int) and num_classes > 0 else np.iinfo(np.int64).max


def bounds_text(bounds: tuple[int, int]) -> str:
    """'[0, 10)', '[0, inf)', '[-1, 0)': label bounds as an error message writes them."""
    lo, hi = bounds
    return f"[{lo}, {'inf' if hi == np.iinfo(np.int64).max else hi})"


def is_labelled(path: str | os.PathLike) -> bool:
    return read_meta(path).get("labelled", True) is not False


def require_labelled(path: str | os.PathLike, what: str, fix: str) -> None:
    """UserError (one line) when the .beton `path`, given as setting `what`, is unlabelled; `fix` says what to do."""
    check(is_labelled(path), f"{what}={path} is unlabelled (written with --cfg.labels=none): {fix}")
