"""Supervise FFCV's DatasetWriter processes: no hang on a dead worker, no orphan, nothing left in /dev/shm.

FFCV's parent waits for its workers in two places: a progress loop that sleeps, and a blocking read of the
result queue (which no signal interrupts). `Supervisor` swaps both for waits that check the workers, so a
worker that died (killed, disk full, an error inside FFCV's encoder) ends the write at once. Each worker
dies with its parent (kill -9 included) and reports an OSError as one line; the shared-memory segment's name
is removed as soon as the first worker holds it, so no kill can leave a /dev/shm/psm_* file behind.
"""
from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import multiprocessing.queues
import os
import queue
import signal
import threading
import time

from ffcv_amcl.errors import UserError, user_io

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_POLL_S = 0.2


class WorkerDied(Exception):
    """A writer process exited with an error code; `Supervisor.died` says which."""


def die_with_parent(parent_pid: int) -> None:
    """Call in a child: end it when `parent_pid` ends, even by kill -9 (Linux: PR_SET_PDEATHSIG; elsewhere a
    thread that watches the parent's PID)."""
    try:
        if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl failed")
    except (AttributeError, OSError):
        def watch():
            while os.getppid() == parent_pid:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, daemon=True).start()
        return
    if os.getppid() != parent_pid:  # the parent ended before prctl took effect
        os._exit(1)


class _PollingQueue(multiprocessing.queues.Queue):
    """FFCV's queue; in the parent a blocking get waits in short timed steps, checking the workers between
    them (`check` raises WorkerDied). Children inherit it by fork and read it plainly."""

    def __init__(self, maxsize: int = 0, *, check=None):
        super().__init__(maxsize, ctx=mp.get_context())
        self._owner, self._check = os.getpid(), check

    def get(self, block=True, timeout=None):
        if not block or timeout is not None or getattr(self, "_owner", None) != os.getpid():
            return super().get(block, timeout)
        while True:
            try:
                return super().get(True, _POLL_S)
            except queue.Empty:
                self._check()


class Supervisor:
    """Context around one `DatasetWriter` run (see the module docstring).

    `target`: the file being written (named in a worker's disk error); `on_error(exc)` runs in the worker
    that meets an OSError, given the one-line UserError, before it exits with code 1."""

    def __init__(self, writer, target, on_error):
        self.writer, self.target, self.on_error = writer, target, on_error
        self.workers: list = []
        self.died: tuple[str, int] | None = None
        self._parent, self._shm_released = os.getpid(), False

    def patches(self) -> dict:
        """{name in ffcv.writer: replacement} for the run."""
        return {"Process": self._process_class(), "sleep": self._sleep,
                "Queue": lambda maxsize=0: _PollingQueue(maxsize, check=self.check_workers)}

    def check_workers(self) -> None:
        """Raise WorkerDied if a worker exited with an error code."""
        for p in self.workers:
            if p.exitcode not in (None, 0):
                self.died = (p.name, p.exitcode)
                raise WorkerDied(f"{p.name} exited with code {p.exitcode}")

    def _sleep(self, seconds: float) -> None:
        self.check_workers()
        time.sleep(seconds)

    def _process_class(self) -> type:
        sup = self

        class WriterProcess(mp.Process):
            def start(self):
                sup.workers.append(self)
                super().start()
                sup.release_shared_memory()

            def run(self):
                die_with_parent(sup._parent)
                try:
                    with user_io(sup.target):
                        super().run()
                except UserError as exc:  # disk full, read-only folder...: one line for the parent
                    sup.on_error(exc)
                    raise SystemExit(1)

        return WriterProcess

    def release_shared_memory(self) -> None:
        """Remove the metadata segment's name once a worker maps it (fork keeps every mapping valid)."""
        sm = getattr(self.writer, "metadata_sm", None)
        if self._shm_released or sm is None or isinstance(sm, int) or mp.get_start_method() != "fork":
            return
        sm.unlink()
        sm.unlink = lambda: None  # FFCV unlinks it again when done
        self._shm_released = True

    def stop_workers(self) -> None:
        """After a failure: stop the workers and free the writer's shared memory."""
        for p in self.workers:
            if p.exitcode is None:
                p.terminate()
            p.join(timeout=5)
        sm = getattr(self.writer, "metadata_sm", None)
        if sm is not None and not isinstance(sm, int):
            with contextlib.suppress(Exception):
                sm.close()
                sm.unlink()
