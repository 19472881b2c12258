"""Dataset facts stored beside each .beton (`X.beton.json`): normalisation and class names.

The .beton holds pixels and labels only; loaders need the mean/std to normalise and the trainer
needs the class count for evaluation, so write_datasets.py records them once at conversion time.
A .beton written by other tools has no sidecar: the loader then falls back to ImageNet statistics.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ffcv_amcl.atomic import atomic_path

# ImageNet statistics on the 0-255 scale: the conventional fallback.
DEFAULT_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
DEFAULT_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def meta_path(beton: str | os.PathLike) -> Path:
    return Path(str(beton) + ".json")


def write_meta(beton: str | os.PathLike, meta: dict) -> None:
    """Write the sidecar atomically (it is renamed into place before the .beton itself)."""
    with atomic_path(meta_path(beton)) as tmp:
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))


def read_meta(beton: str | os.PathLike) -> dict:
    """Sidecar content with defaults filled in: keys dataset, split, num_samples, num_classes,
    classes, mean, std (0-255 scale, RGB)."""
    meta = {"dataset": "unknown", "split": "unknown", "num_samples": None, "num_classes": None,
            "classes": None, "mean": list(DEFAULT_MEAN), "std": list(DEFAULT_STD)}
    p = meta_path(beton)
    if p.is_file():
        try:
            meta.update(json.loads(p.read_text()))
        except (OSError, ValueError):
            pass  # A damaged sidecar only costs the normalisation constants.
    return meta
