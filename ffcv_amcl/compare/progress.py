"""The command's progress: one tqdm bar over the runs (its rate and ETA count whole runs) and one line per ended
run, written above the bar."""
from __future__ import annotations

import sys

from ffcv_amcl.compare.attempt import FINISHED, STOPPED


class Progress:
    """`describe(spec)` gives a finished run's result in words (its metric, its minutes)."""

    def __init__(self, total: int, describe, *, disable: bool = False):
        from tqdm import tqdm

        self.describe = describe
        self.failed = 0
        self.bar = tqdm(total=total, unit="run", desc="compare", dynamic_ncols=True, file=sys.stderr,
                        disable=disable or total == 0)
        self.running: list[str] = []

    def started(self, spec) -> None:
        self.running.append(spec.label)
        self._postfix()

    def ended(self, spec, outcome: dict) -> None:
        if spec.label in self.running:
            self.running.remove(spec.label)
        status = outcome["status"]
        if status == FINISHED:
            line = f"finished {spec.label}: {self.describe(spec)}"
        elif status == STOPPED:
            line = f"stopped {spec.label} (it saved a checkpoint; the same command resumes it)"
        else:
            self.failed += 1
            line = f"failed {spec.label}: {outcome['error']} (log: {spec.folder / 'train.log'})"
        self.bar.write(line, file=sys.stderr)
        if status != STOPPED:
            self.bar.update(1)
        self._postfix()

    def note(self, line: str) -> None:
        self.bar.write(line, file=sys.stderr)

    def _postfix(self) -> None:
        shown = ", ".join(self.running[:2]) + (f" +{len(self.running) - 2}" if len(self.running) > 2 else "")
        self.bar.set_postfix_str(f"running {shown}" + (f"; {self.failed} failed" if self.failed else ""),
                                 refresh=True)

    def close(self) -> None:
        self.bar.close()
