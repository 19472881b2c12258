"""Pre-emption and Ctrl-C. Once a run is built, SIGTERM (a scheduler taking the machine back) or SIGINT (Ctrl-C)
sets a flag; the training loop checkpoints at the next step boundary and returns, and the process exits 143
(SIGTERM) or 130 (SIGINT); the same command resumes. A second Ctrl-C stops at once, without saving.

Before that (imports, config checks, loaders and model being built) there is nothing to save: either signal ends
the process at once with one line (`exit_during_startup`), as a kill would, since every file is written atomically.
"""
from __future__ import annotations

import os
import signal

SIGNALS = (signal.SIGTERM, signal.SIGINT)
EXIT_CODES = {"SIGTERM": 143, "SIGINT": 130}    # 128 + the signal's number, as a shell reports a killed process


def _install(handler) -> dict:
    """Set `handler` for SIGNALS; returns the handlers it replaced ({} outside the main thread)."""
    previous = {}
    for sig in SIGNALS:
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:      # not the main thread (e.g. some test runners)
            pass
    return previous


def restore(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def _exit_now(signum, frame):
    name = signal.Signals(signum).name
    os.write(2, f"stopped by {name} during start-up, before training began: nothing to save; rerun the same "
                f"command to start\n".encode())
    os._exit(EXIT_CODES[name])


def exit_during_startup() -> dict:
    """From now until a StopFlag is installed, SIGTERM/SIGINT end the process at once with one line; returns the
    handlers replaced."""
    return _install(_exit_now)


class StopFlag:
    """SIGTERM or SIGINT sets `set` (and `signal`, its name); `install` once the run can save, `restore` the
    previous handlers at its end."""

    def __init__(self):
        self.set = False
        self.signal: str | None = None
        self._previous: dict = {}

    def install(self):
        self._previous = _install(self._handle)
        return self

    def _handle(self, signum, frame):
        if self.set and signum == signal.SIGINT:
            raise KeyboardInterrupt     # a second Ctrl-C: stop now, without saving
        self.set, self.signal = True, signal.Signals(signum).name
        if signum == signal.SIGINT and os.environ.get("RANK", "0") == "0":
            os.write(2, b"\nCtrl-C: saving a checkpoint after this step (press Ctrl-C again to stop without saving)\n")

    def follow(self) -> None:
        """Stop with the other ranks when one of them was signalled (a scheduler signals them all: SIGTERM unless
        this rank saw its own signal)."""
        self.set, self.signal = True, self.signal or "SIGTERM"

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signal, 0)

    def restore(self):
        restore(self._previous)
        self._previous = {}
