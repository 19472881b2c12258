"""A training run's folder (logging.folder): who may use it, how a run starts over or resumes, its config record.

- `prepare_folder`: one training per folder. An flock on `.lock` that the OS drops when the process ends, even on
  kill -9, so a crash cannot leave a stale lock; a second training exits with one line naming the holder's PID.
  Temporary files of killed writers are removed.
- `start_over`: `training.resume=none` means a fresh run. A folder that holds another run's checkpoints is refused
  unless `training.overwrite=1`, which deletes that run's checkpoints, metrics, config and wandb id first, so
  `auto` can never pick up stale files later.
- `find_resume`: the checkpoint `training.resume` names (auto: the newest that loads), checked against the
  settings before anything is built (compatibility.check_compatible, RESUME mode).
- `write_config`: config.json, the flat current settings (plus dist.world_size and the data facts) and `history`,
  the resumes under changed settings; `read_config` reads it back for plots and export.
"""
from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ffcv_amcl.atomic import atomic_path, remove_stale_temps
from ffcv_amcl.checkpoint import find_latest, list_checkpoints, load_checkpoint, saved_settings
from ffcv_amcl.compatibility import RESUME, WORLD_SIZE, check_compatible
from ffcv_amcl.errors import UserError, check_writable_dir, user_io, warn
from ffcv_amcl.monitoring.metrics import METRICS_FILE
from ffcv_amcl.monitoring.sinks import WANDB_ID_FILE

LOCK = ".lock"
CONFIG_FILE = "config.json"
HISTORY = "history"


def lock_folder(folder: Path, *, setting: str = "logging.folder", user: str = "training"):
    """Hold an exclusive lock on `folder` for the life of this process; returns the open lock file (keep it).
    UserError naming the PID of the `user` that holds it and the `setting` that chose the folder."""
    with user_io(folder / LOCK):
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    handle = os.fdopen(fd, "r+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise UserError(f"{setting} {folder} is in use by another {user} (PID {holder}): wait for it to "
                        f"finish, or choose another --{setting}")
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def start_over(folder: Path, overwrite: bool) -> None:
    """Make `folder` ready for a fresh run (training.resume=none)."""
    old = list_checkpoints(folder)
    if not old:
        return
    if not overwrite:
        raise UserError(f"logging.folder {folder} holds checkpoints of an earlier run ({old[0].name}, ...) and "
                        f"training.resume=none starts over: add --training.overwrite=1 to delete that run, or "
                        f"choose another --logging.folder")
    for path in [*old, folder / METRICS_FILE, folder / CONFIG_FILE, folder / WANDB_ID_FILE]:
        path.unlink(missing_ok=True)


def prepare_folder(folder: Path, *, is_main: bool, resume: str, overwrite: bool):
    """Rank 0 creates and locks the folder, removes dead writers' temporary files and clears a fresh run's old
    files; returns the lock handle (None on other ranks)."""
    if not is_main:
        return None
    with user_io(folder, "creating"):
        folder.mkdir(parents=True, exist_ok=True)
    check_writable_dir(folder, "logging.folder")
    lock = lock_folder(folder)
    remove_stale_temps(folder)
    if resume == "none":
        start_over(folder, overwrite)
    return lock


@dataclass
class Resume:
    """The checkpoint a run resumes from (path None: a fresh run) and the run-shaping settings that changed."""

    path: Path | None = None
    state: dict | None = None
    changed: dict = field(default_factory=dict)

    @property
    def history(self) -> list:
        """The run's history as the resumed run carries it on: the checkpoint's, plus this resume's changes."""
        past = list(self.state["history"]) if self.state else []
        if self.changed:
            past.append({"epoch": int(self.state["epoch"]), "step": int(self.state["step"]), "changed": self.changed})
        return past


def find_resume(cfg, folder: Path, flat: dict, world_size: int) -> Resume:
    """The checkpoint training.resume names (auto: the newest valid one in `folder`), checked against the
    settings `flat` and the world size before anything is built."""
    t = cfg.training
    if t.resume == "none":
        return Resume()
    if t.resume == "auto":
        found = find_latest(folder, warn=lambda msg: warn(msg.removeprefix("warning: ")))
        if not found:
            return Resume()
        path, state = found
    else:
        path, state = Path(t.resume), load_checkpoint(t.resume)
    changed = check_compatible(saved_settings(state), {**flat, WORLD_SIZE: world_size}, RESUME,
                               source=f"checkpoint {path}", allow_changed=bool(t.resume_changed),
                               fix="use another --logging.folder, or start over with --training.resume=none "
                                   "--training.overwrite=1")
    return Resume(path, state, changed)


def write_config(folder: Path, flat: dict, facts: dict, history: list) -> None:
    """config.json: the flat current settings (readable as such by other tools), the facts, and the history."""
    with atomic_path(folder / CONFIG_FILE) as tmp:
        tmp.write_text(json.dumps({**flat, **facts, HISTORY: history}, indent=2, sort_keys=True))


def read_config(folder: Path) -> dict | None:
    """The flat settings of folder/config.json (without its history); None when there is none."""
    path = folder / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
    except ValueError:
        saved = None
    if not isinstance(saved, dict):
        raise UserError(f"{path} is not a JSON object: the file is damaged; restore it or delete it")
    return {k: v for k, v in saved.items() if k != HISTORY}
