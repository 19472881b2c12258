"""Pre-emption: SIGTERM (a scheduler taking the machine back) sets a flag; the training loop checkpoints at the
next step boundary, returns, and the process exits 143; the same command resumes."""
from __future__ import annotations

import signal


class StopFlag:
    """SIGTERM sets `set`; `install` from the start of a run, `restore` the previous handler at its end."""

    def __init__(self):
        self.set = False
        self._previous = None

    def install(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread (e.g. some test runners)
            pass
        return self

    def _handle(self, signum, frame):
        self.set = True

    def restore(self):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
