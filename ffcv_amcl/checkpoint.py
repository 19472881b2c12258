"""Checkpoints: what a run saves and restores, written atomically, read with `weights_only=True`, the newest
valid one found for resume.

A checkpoint is a dict of tensors and plain containers only, so `torch.load(..., weights_only=True)` accepts it
and a file from elsewhere cannot run code when loaded. `save_run` is its schema:

  format          FORMAT; a file of another format is refused in one line
  model, optimizer, scaler, probe    state dicts (probe: the online linear probe's, when it is on)
  epoch, step     epochs and steps completed
  batch_in_epoch  > 0: a mid-epoch checkpoint, that many batches of the next epoch done (epoch_stats: their totals)
  config          the flat settings the run trained under; world_size, its number of processes
  history         the resumes under changed settings: [{epoch, step, changed: {key: [old, new]}}]
  torch_version   the writer's torch

`load_checkpoint` is the one reader: every command reads through it, and it fills in what checkpoints written
before a field or setting existed ran with (LEGACY_*), so no other code knows about old files. Files are
`ckpt_e{epoch:04d}_s{step:08d}.pt` in logging.folder; "newest" is the highest step whose file loads, so a file
truncated by a crash is skipped, not fatal.
"""
from __future__ import annotations

import os
import re
import sys
import warnings
from pathlib import Path

import torch

from ffcv_amcl.atomic import atomic_path
from ffcv_amcl.compatibility import WORLD_SIZE
from ffcv_amcl.errors import UserError, check_input_file

NAME = re.compile(r"^ckpt_e(\d+)_s(\d+)\.pt$")
FORMAT = 1
# What checkpoints that lack a setting or a field ran with.
LEGACY_CONFIG = {"loss.amcl_form": "ref"}
LEGACY_FIELDS = {"batch_in_epoch": 0, "world_size": 1, "epoch_stats": None, "history": []}
# Mid-epoch totals of a monitor kept under another key of epoch_stats: key -> the monitor's name.
LEGACY_MONITORS = {"health": "temperature_health"}


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
    """Write `state` (needs 'epoch' and 'step') to folder/ckpt_e..._s....pt (save_torch), stamped with FORMAT."""
    return save_torch({"format": FORMAT, **state},
                      Path(folder) / checkpoint_name(int(state["epoch"]), int(state["step"])))


def save_run(folder: str | os.PathLike, *, model: dict, optimizer: dict, scaler: dict, epoch: int, step: int,
             batch_in_epoch: int, config: dict, world_size: int, epoch_stats: dict | None = None,
             probe: dict | None = None, history: list = ()) -> Path:
    """Save a run's state (the schema above) as folder's checkpoint for (epoch, step)."""
    state = {"model": model, "optimizer": optimizer, "scaler": scaler, "epoch": epoch, "step": step,
             "batch_in_epoch": batch_in_epoch, "config": config, "world_size": world_size,
             "epoch_stats": epoch_stats, "history": list(history), "torch_version": str(torch.__version__)}
    if probe is not None:
        state["probe"] = probe
    return save_checkpoint(folder, state)


def restore_run(state: dict, path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler,
                probe=None) -> None:
    """Load a checkpoint's weights, optimiser and scaler state (and the online probe's, when both have one) into
    a run's objects; one UserError line when they do not fit."""
    load_weights(model, state, path)
    try:
        optimizer.load_state_dict(state["optimizer"])
        if probe is not None and state.get("probe"):
            probe.load_state_dict(state["probe"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise UserError(f"checkpoint {path} does not fit this model's optimiser ({str(exc).splitlines()[0][:120]}): "
                        f"use another logging.folder, or start over with --training.resume=none "
                        f"--training.overwrite=1")
    scaler.load_state_dict(state["scaler"])


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """The checkpoint at `path`, read with weights_only=True, its legacy gaps filled; UserError (one line) when
    the file is missing, truncated, foreign or of another format."""
    path = check_input_file(path, "checkpoint", "check the path")
    try:
        with warnings.catch_warnings():     # the unpickler's notes on a foreign file: the file is refused below
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
        first = next((ln for ln in lines if "Unsupported global" in ln), lines[0])[:160]
        raise UserError(f"checkpoint {path} cannot be loaded safely ({first}): it is corrupt or not written by "
                        f"ffcv-amcl; pick another file")
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise UserError(f"checkpoint {path} is not an ffcv-amcl training checkpoint (no model/config entries)")
    if state.get("format") != FORMAT:
        raise UserError(f"checkpoint {path} is in format {state.get('format')!r} and this version of ffcv-amcl "
                        f"reads format {FORMAT}: use the version that wrote it")
    return fill_legacy(state)


def fill_legacy(state: dict) -> dict:
    """`state` with what it lacks filled in from LEGACY_*: the settings and fields older checkpoints ran with."""
    state = {**LEGACY_FIELDS, **state, "config": {**LEGACY_CONFIG, **state["config"]}}
    state["history"] = list(state["history"])
    stats = state["epoch_stats"]
    if stats and any(key in stats for key in LEGACY_MONITORS):
        monitors = {**stats.get("monitors", {}), **{LEGACY_MONITORS[k]: v for k, v in stats.items()
                                                    if k in LEGACY_MONITORS}}
        state["epoch_stats"] = {**{k: v for k, v in stats.items() if k not in LEGACY_MONITORS}, "monitors": monitors}
    return state


def saved_settings(state: dict) -> dict:
    """The settings a checkpoint trained under, as check_compatible compares them: its flat config and its
    number of processes."""
    return {**state["config"], WORLD_SIZE: int(state["world_size"])}


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


def load_weights(model: torch.nn.Module, state: dict, path: str | os.PathLike) -> None:
    """Load a checkpoint's model weights into `model` (strict); one UserError line when they do not fit or are not
    all finite (weights a run could not continue from, nor anyone use)."""
    check_finite(state["model"], path)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise UserError(f"checkpoint {path} does not fit the model its settings describe ({first}): it was written "
                        f"by another version or for other model settings; pick the matching checkpoint or settings")


def check_finite(weights: dict, path: str | os.PathLike) -> None:
    """Refuse a state dict with a NaN or infinite value, naming the tensors and the newest earlier checkpoint."""
    bad = {k: int((~torch.isfinite(v)).sum()) for k, v in weights.items()
           if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())}
    if not bad:
        return
    path = Path(path)
    names = ", ".join(f"{k} ({n})" for k, n in list(bad.items())[:3]) + (", ..." if len(bad) > 3 else "")
    older = [p for p in list_checkpoints(path.parent) if _step(p) < _step(path)]
    fix = (f"use the newest earlier checkpoint, {older[0]}" if older
           else "start the run over with --training.resume=none --training.overwrite=1 (it has no earlier "
                "checkpoint)")
    raise UserError(f"checkpoint {path} holds non-finite weights ({sum(bad.values())} NaN/inf values, in {names}): "
                    f"the run diverged before it was saved, and nothing can be resumed, evaluated or exported from "
                    f"it; {fix}")


def _step(path: Path) -> int:
    m = NAME.match(path.name)
    return int(m.group(2)) if m else -1


def restore_model(checkpoint: str | os.PathLike, *, device: torch.device | str = "cpu", state: dict | None = None):
    """(model, cfg, state): the SSL model a checkpoint's stored config describes, with its weights, in eval mode.

    The one place that rebuilds a model from a checkpoint (eval, plots and export call it; the trainer's resume
    and the profiler load into the model they built). `state` skips reading the file again."""
    from ffcv_amcl.config import from_flat
    from ffcv_amcl.model.ssl import build_model

    state = state if state is not None else load_checkpoint(checkpoint)
    try:
        cfg = from_flat(dict(state["config"]))
        model = build_model(cfg, global_batch=cfg.training.batch_size * int(state["world_size"]),
                            device=device)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"checkpoint {checkpoint} stores settings this version cannot rebuild ({exc}): use the "
                        f"version of ffcv-amcl that wrote it")
    load_weights(model, state, checkpoint)
    return model.eval(), cfg, state
