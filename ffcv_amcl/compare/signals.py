"""SIGINT and SIGTERM to the compare command: remembered (not fatal) while its runs are stopped, so every run saves
a checkpoint before the command exits 130 (SIGINT) or 143 (SIGTERM); the same command then continues."""
from __future__ import annotations

import signal

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Signals:
    """Within the block, SIGINT and SIGTERM only count: `first` is the first one received, `count` how many."""

    def __init__(self):
        self.first: int | None = None
        self.count = 0
        self._previous: dict = {}

    def __enter__(self) -> "Signals":
        for sig in EXIT_CODES:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:            # not the main thread: signals stay as they are
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)

    def _handle(self, signum, frame) -> None:
        self.first = self.first or signum
        self.count += 1

    @property
    def exit_code(self) -> int | None:
        return EXIT_CODES.get(self.first) if self.first else None
