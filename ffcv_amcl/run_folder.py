"""A training run's folder (logging.folder): who may use it, how a run starts over, and its metrics log.

- `lock_folder`: one training per folder. An flock on `.lock` that the OS drops when the process ends, even on
  kill -9, so a crash cannot leave a stale lock; a second training exits with one line naming the holder's PID.
- `start_over`: `training.resume=none` means a fresh run. A folder that holds another run's checkpoints is refused
  unless `training.overwrite=1`, which deletes that run's checkpoints, metrics and config first, so `auto` can
  never pick up stale files later.
- `MetricsLog`: metrics.jsonl, one JSON object per epoch, appended and flushed line by line; a torn last line
  (a killed run) is skipped with a warning instead of blocking the resume.
"""
from __future__ import annotations

import fcntl
import json
import os
import sys
from pathlib import Path

from ffcv_amcl.atomic import atomic_path
from ffcv_amcl.checkpoint import list_checkpoints
from ffcv_amcl.errors import UserError, user_io

LOCK = ".lock"


def warn(message: str) -> None:
    """Warnings go to stderr, one line each."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def lock_folder(folder: Path):
    """Hold an exclusive lock on `folder` for the life of this process; returns the open lock file (keep it).
    UserError naming the PID of the training that holds it."""
    with user_io(folder / LOCK):
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    handle = os.fdopen(fd, "r+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise UserError(f"logging.folder {folder} is in use by another training (PID {holder}): wait for it to "
                        f"finish, or choose another --logging.folder")
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
    for path in [*old, folder / "metrics.jsonl", folder / "config.json"]:
        path.unlink(missing_ok=True)


class MetricsLog:
    """metrics.jsonl (one object per epoch) and optional TensorBoard, written by rank 0 only."""

    def __init__(self, folder: Path, enabled: bool, tensorboard: bool):
        self.path, self.enabled, self.tb = folder / "metrics.jsonl", enabled, None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # checked importable by run()
            self.tb = SummaryWriter(str(folder / "tensorboard"))

    def read(self) -> list[dict]:
        """The records on disk; a damaged line (a run killed mid-write) is skipped with a warning."""
        if not self.path.exists():
            return []
        records = []
        for n, line in enumerate(self.path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict) or "epoch" not in record:
                warn(f"{self.path} line {n} is damaged (a run stopped while writing it?); ignoring it")
                continue
            records.append(record)
        return records

    def truncate(self, last_epoch: int) -> None:
        """Keep only the records up to `last_epoch` (later ones were written before a crash the resume repeats)."""
        if not self.enabled or not self.path.exists():
            return
        keep = [r for r in self.read() if r["epoch"] <= last_epoch]
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with user_io(self.path), open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if self.tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("epoch",):
                    self.tb.add_scalar(key, value, record["epoch"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
