"""metrics.jsonl, a run's record: one JSON object per epoch, appended and flushed line by line by rank 0, and the
one reader of it. A torn last line (a run killed while writing it) is skipped with a warning, so it never blocks a
resume or a plot. Each record also goes to the sinks that are switched on (monitoring.sinks)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from ffcv_amcl.atomic import atomic_path
from ffcv_amcl.errors import user_io, warn
from ffcv_amcl.monitoring.names import EPOCH

METRICS_FILE = "metrics.jsonl"


def read_metrics(folder: str | os.PathLike) -> list[dict]:
    """The epoch records of folder/metrics.jsonl ([] when there is none); a damaged line is skipped with a
    warning naming it."""
    path = Path(folder) / METRICS_FILE
    if not path.is_file():
        return []
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or EPOCH not in record:
            warn(f"{path} line {n} is damaged (a run stopped while writing it?); ignoring it")
            continue
        records.append(record)
    return records


class MetricsLog:
    """Writes the records (rank 0 only: `enabled`) to metrics.jsonl and to each of `sinks`."""

    def __init__(self, folder: Path, enabled: bool, sinks: list | None = None):
        self.folder, self.path, self.enabled = folder, folder / METRICS_FILE, enabled
        self.sinks = list(sinks or []) if enabled else []

    def truncate(self, last_epoch: int) -> None:
        """Keep only the records up to `last_epoch` (later ones were written before a crash the resume repeats)."""
        if not self.enabled or not self.path.exists():
            return
        keep = [r for r in read_metrics(self.folder) if r[EPOCH] <= last_epoch]
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with user_io(self.path), open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        for sink in self.sinks:
            sink.write(record)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
