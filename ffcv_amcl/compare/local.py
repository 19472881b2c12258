"""Runs on this machine, `len(slots)` at a time, each in its own slot (launch.Slot), watched from the main thread
(no worker threads: a child's parent-death signal follows the thread that started it). A signal to the command is
passed on as SIGTERM to every run, which saves and exits; a second one kills them at once."""
from __future__ import annotations

import signal
import time

from ffcv_amcl.compare.attempt import start
from ffcv_amcl.compare.signals import Signals

POLL_S = 0.2


def run_local(specs: list, slots: list, progress, *, nproc_of, cwd: str) -> tuple[dict, int | None]:
    """({run label: outcome}, the exit code a signal asks for, or None). `nproc_of(spec)`: processes per run."""
    pending, running, outcomes = list(specs), {}, {}
    with Signals() as sig:
        stopped_at = 0
        while pending or running:
            while pending and not sig.first and len(running) < len(slots):
                slot = next(i for i in range(len(slots)) if i not in running)
                spec = pending.pop(0)
                running[slot] = start(spec, slots[slot], nproc=nproc_of(spec), cwd=cwd)
                progress.started(spec)
            if sig.count > stopped_at:
                stopped_at = sig.count
                for attempt in running.values():
                    attempt.stop(signal.SIGTERM if sig.count == 1 else signal.SIGKILL)
                if sig.count == 1 and running:
                    progress.note("stopping: every run saves a checkpoint first (signal again to kill them now)")
            for slot, attempt in list(running.items()):
                code = attempt.process.poll()
                if code is not None:
                    del running[slot]
                    outcomes[attempt.spec.label] = attempt.finish(code)
                    progress.ended(attempt.spec, outcomes[attempt.spec.label])
            if sig.first and not running:
                break
            time.sleep(POLL_S)
    return outcomes, sig.exit_code
