"""Checkpoints: written atomically, read with `weights_only=True`, newest valid one found for resume.

A checkpoint is a dict of tensors and plain containers only (model/optimizer/scaler state dicts, ints,
floats, strings, the flat config), so `torch.load(..., weights_only=True)` accepts it and a file from
elsewhere cannot run code when loaded. Files are `ckpt_e{epoch:04d}_s{step:08d}.pt` in logging.folder;
"newest" is the highest step whose file loads, so a file truncated by a crash is skipped, not fatal.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import torch

from ffcv_amcl.atomic import atomic_path
from ffcv_amcl.errors import UserError

NAME = re.compile(r"^ckpt_e(\d+)_s(\d+)\.pt$")
FORMAT = 1
# Settings a checkpoint's weights depend on: resuming or evaluating with other values cannot work.
MODEL_KEYS = ("model.arch", "model.method", "model.amcl", "model.heads", "model.stem", "model.proj_dim",
              "model.proj_hidden", "model.pred_hidden", "data.image_size", "loss.queue_size", "loss.tau_hidden")
# Settings a resumed run must keep: the weights' and the objective's (the same weights trained on under another
# AMCL form would silently become another experiment).
RESUME_KEYS = (*MODEL_KEYS, "loss.amcl_form", "loss.nll_dim")
# What checkpoints written before a setting existed ran with.
LEGACY = {"loss.amcl_form": "ref"}


def checkpoint_name(epoch: int, step: int) -> str:
    return f"ckpt_e{epoch:04d}_s{step:08d}.pt"


def save_torch(obj, path: str | os.PathLike) -> Path:
    """torch.save `obj` to `path` atomically (temporary file + rename), loadable with weights_only=True.

    torch.save writes through our own file object: given a path, its C++ writer reports a full disk as
    'enforce fail at inline_container.cc'; through a Python file the OSError stays in the chain, and
    atomic_path turns it into one line (UserError) naming the file and the cause."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
    return path


def save_checkpoint(folder: str | os.PathLike, state: dict) -> Path:
    """Write `state` (needs 'epoch' and 'step') to folder/ckpt_e..._s....pt (save_torch)."""
    return save_torch({"format": FORMAT, **state},
                      Path(folder) / checkpoint_name(int(state["epoch"]), int(state["step"])))


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


def _warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def find_latest(folder: str | os.PathLike, map_location="cpu", *, warn=_warn) -> tuple[Path, dict] | None:
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
        old = saved.get(key, LEGACY.get(key))
        if old is not None and key in current and old != current[key]:
            return f"{key}: checkpoint {old!r}, config {current[key]!r}"
    return None


def load_weights(model: torch.nn.Module, state: dict, path: str | os.PathLike) -> None:
    """Load a checkpoint's model weights into `model` (strict); one UserError line when they do not fit."""
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise UserError(f"checkpoint {path} does not fit the model its settings describe ({first}): it was written "
                        f"by another version or for other model settings; pick the matching checkpoint or settings")


def restore_model(checkpoint: str | os.PathLike, *, device: torch.device | str = "cpu", state: dict | None = None):
    """(model, cfg, state): the SSL model a checkpoint's stored config describes, with its weights, in eval mode.

    The one place that rebuilds a model from a checkpoint (eval, plots, profile, export call it; the trainer's
    resume loads into the model it built with `load_weights`). `state` skips reading the file again."""
    from ffcv_amcl.config import from_flat
    from ffcv_amcl.model.ssl import build_model

    state = state if state is not None else load_checkpoint(checkpoint)
    try:
        cfg = from_flat(dict(state["config"]))
        model = build_model(cfg, global_batch=cfg.training.batch_size * int(state.get("world_size", 1)),
                            device=device)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"checkpoint {checkpoint} stores settings this version cannot rebuild ({exc}): use the "
                        f"version of ffcv-amcl that wrote it")
    load_weights(model, state, checkpoint)
    return model.eval(), cfg, state
