"""Checkpoints: written atomically, read with `weights_only=True`, newest valid one found for resume.

A checkpoint is a dict of tensors and plain containers only (model/optimizer/scaler state dicts, ints,
floats, strings, the flat config), so `torch.load(..., weights_only=True)` accepts it and a file from
elsewhere cannot run code when loaded. Files are `ckpt_e{epoch:04d}_s{step:08d}.pt` in logging.folder;
"newest" is the highest step whose file loads, so a file truncated by a crash is skipped, not fatal.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from ffcv_amcl.atomic import atomic_path
from ffcv_amcl.errors import UserError

NAME = re.compile(r"^ckpt_e(\d+)_s(\d+)\.pt$")
FORMAT = 1
# Settings a checkpoint's weights depend on: resuming or evaluating with other values cannot work.
MODEL_KEYS = ("model.arch", "model.method", "model.amcl", "model.heads", "model.stem", "model.proj_dim",
              "model.proj_hidden", "model.pred_hidden", "data.image_size", "loss.queue_size", "loss.tau_hidden")


def checkpoint_name(epoch: int, step: int) -> str:
    return f"ckpt_e{epoch:04d}_s{step:08d}.pt"


def save_checkpoint(folder: str | os.PathLike, state: dict) -> Path:
    """Write `state` (needs 'epoch' and 'step') to folder/ckpt_e..._s....pt via a temporary file + rename."""
    path = Path(folder) / checkpoint_name(int(state["epoch"]), int(state["step"]))
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)
    return path


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load with weights_only=True; UserError (one line) when the file is missing, truncated or foreign."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found: check the path")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
        first = next((ln for ln in lines if "Unsupported global" in ln), lines[0])[:160]
        raise UserError(f"checkpoint {path} cannot be loaded safely ({first}): it is corrupt or not written by "
                        f"ffcv-amcl; pick another file")
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise UserError(f"checkpoint {path} is not an ffcv-amcl training checkpoint (no model/config entries)")
    return state


def list_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """Checkpoint files in folder, newest (highest step, then epoch) first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = NAME.match(p.name)
        if m:
            found.append((int(m.group(2)), int(m.group(1)), p))
    return [p for _, _, p in sorted(found, reverse=True)]


def find_latest(folder: str | os.PathLike, map_location="cpu", *, warn=print) -> tuple[Path, dict] | None:
    """(path, state) of the newest checkpoint that loads, skipping (and reporting) corrupt ones; None if none."""
    for path in list_checkpoints(folder):
        try:
            return path, load_checkpoint(path, map_location)
        except UserError as exc:
            warn(f"warning: skipping {path.name}: {exc}")
    return None


def config_mismatch(saved: dict, current: dict, keys=MODEL_KEYS) -> str | None:
    """First setting in `keys` whose value differs, as 'key: checkpoint X, config Y'; None when all agree."""
    for key in keys:
        if key in saved and key in current and saved[key] != current[key]:
            return f"{key}: checkpoint {saved[key]!r}, config {current[key]!r}"
    return None
