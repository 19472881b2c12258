"""The sidecar (`X.beton.json`): the dataset facts stored beside each .beton, part of the dataset.

The .beton holds pixels and labels only; loaders need the mean/std to normalise and evaluation needs the class
names, so the writer records them once at conversion time, with the file's sample count and its fingerprint
(size and a hash of sampled blocks). Every reader requires the sidecar and checks it against the .beton
(data.beton.validate_beton), so a missing, damaged, edited or stale sidecar is one line, never other statistics.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ffcv_amcl.atomic import atomic_path
from ffcv_amcl.errors import UserError

SUFFIX = ".json"
REWRITE = "rewrite it with write_datasets.py"
REQUIRED = ("num_samples", "mean", "std", "fingerprint")
_BLOCK = 1 << 16         # bytes hashed at each sampled offset
_BLOCKS = 64             # evenly spaced blocks, plus the whole first and last MiB (the header and the tables)
_END = 1 << 20


def meta_path(beton: str | os.PathLike) -> Path:
    return Path(str(beton) + SUFFIX)


def fingerprint(path: str | os.PathLike) -> dict:
    """{'bytes': size, 'blake2b': hash of the first and last MiB and 64 evenly spaced 64 KiB blocks}: a few MiB
    read whatever the file's size, and a copy keeps it (no name, time or inode in it)."""
    size = os.path.getsize(path)
    digest = hashlib.blake2b(digest_size=16)
    offsets = [0, max(size - _END, 0)] + [size * i // _BLOCKS for i in range(_BLOCKS)]
    with open(path, "rb") as f:
        for i, offset in enumerate(offsets):
            f.seek(offset)
            digest.update(f.read(_END if i < 2 else _BLOCK))
    return {"bytes": size, "blake2b": digest.hexdigest()}


def write_meta(beton: str | os.PathLike, meta: dict, *, data: str | os.PathLike | None = None) -> dict:
    """Write `beton`'s sidecar atomically, stamped with the fingerprint of `data` (the file that is or becomes
    `beton`: the writer's temporary file before its rename; default `beton` itself). Returns what it wrote."""
    meta = {**meta, "fingerprint": fingerprint(data if data is not None else beton)}
    with atomic_path(meta_path(beton)) as tmp:
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
    return meta


def read_meta(beton: str | os.PathLike, what: str = "dataset file") -> dict:
    """The sidecar's content (keys dataset, split, num_samples, num_classes, classes, mean, std on 0-255 RGB,
    fingerprint, ...); one UserError line naming `what` when it is missing, damaged or lacks a required key."""
    p = meta_path(beton)
    if not p.is_file():
        raise UserError(f"{what} {beton} has no sidecar {p.name} (its class names and mean/std): {REWRITE}")
    try:
        meta = json.loads(p.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        cause = exc.strerror if isinstance(exc, OSError) else "not JSON"
        raise UserError(f"{what} {beton} has an unreadable sidecar {p.name} ({cause}): {REWRITE}") from None
    missing = [k for k in REQUIRED if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise UserError(f"{what} {beton} has a sidecar {p.name} without {', '.join(missing)}: {REWRITE}")
    return {"dataset": "unknown", "split": "unknown", "num_classes": None, "classes": None, **meta}


def check_meta(beton: str | os.PathLike, meta: dict, num_samples: int, what: str = "dataset file") -> None:
    """The sidecar describes this very file: its sample count, fingerprint and statistics agree with it."""
    name = meta_path(beton).name
    if meta["num_samples"] != num_samples:
        raise UserError(f"{what} {beton} has the sidecar of another file: {name} claims {meta['num_samples']} "
                        f"samples, the file holds {num_samples}; {REWRITE}")
    if meta["fingerprint"] != fingerprint(beton):
        raise UserError(f"{what} {beton} does not match its sidecar {name}, written for another version of the "
                        f"file (their sizes or contents differ): {REWRITE}")
    for key, low in (("mean", 0.0), ("std", 1e-6)):
        values = meta[key]
        if not (isinstance(values, list) and len(values) == 3
                and all(isinstance(v, (int, float)) and low <= v <= 255 for v in values)):
            raise UserError(f"{what} {beton} has a sidecar {name} whose {key} is {values!r}, not three numbers in "
                            f"[{low:g}, 255]: {REWRITE}")
