"""Labelled and unlabelled .beton files: an unlabelled set (write_datasets.py --cfg.labels=none) stores the label
UNLABELLED for every image and its sidecar says `"labelled": false` (no classes). It trains like any other set;
what needs labels (the kNN monitor, the online probe, eval.py) refuses it with one line naming the setting to use.
A .beton without a sidecar, or with a sidecar written before this key existed, counts as labelled.
"""
from __future__ import annotations

import os

from ffcv_amcl.data.meta import read_meta
from ffcv_amcl.errors import check

UNLABELLED = -1


def is_labelled(path: str | os.PathLike) -> bool:
    return read_meta(path).get("labelled", True) is not False


def require_labelled(path: str | os.PathLike, what: str, fix: str) -> None:
    """UserError (one line) when the .beton `path`, given as setting `what`, is unlabelled; `fix` says what to do."""
    check(is_labelled(path), f"{what}={path} is unlabelled (written with --cfg.labels=none): {fix}")
