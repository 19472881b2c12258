"""One attempt at a run: the trainer started in its run folder with its log there (train.log), waited for, and its
outcome recorded beside the trainer's own files (outcome.json: status, exit code, last error line, seconds over all
attempts). What to do with a run follows from its folder alone (`run_state`), so the command, a rerun and a
submitit job all agree:

  finished  its last attempt ended with exit 0 and its config.json has the plan's settings: skipped
  changed   finished, but under other settings: started again, and the trainer's resume check refuses it
  resume    stopped or killed part way (a checkpoint or a log is there): the trainer resumes it (resume=auto)
  retry     its last attempt failed: started again
  new       nothing there yet
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ffcv_amcl.atomic import atomic_path
from ffcv_amcl.compare.launch import Slot, command, slot_env

OUTCOME_FILE = "outcome.json"
LOG_FILE = "train.log"
FINISHED, FAILED, STOPPED = "finished", "failed", "stopped"


def read_outcome(folder: Path) -> dict | None:
    path = Path(folder) / OUTCOME_FILE
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) else None


def changed_settings(spec) -> dict:
    """{setting: [in the folder's config.json, in the plan]} for the settings that shape the run."""
    from ffcv_amcl.compatibility import differences, shapes_the_run
    from ffcv_amcl.run_folder import read_config

    saved = read_config(spec.folder) or {}
    return differences(saved, spec.flat, [k for k in spec.flat if shapes_the_run(k)])


def run_state(spec) -> str:
    """finished, changed, resume, retry or new (the module docstring says what each means)."""
    outcome = read_outcome(spec.folder)
    if outcome and outcome.get("status") == FINISHED:
        return "changed" if changed_settings(spec) else "finished"
    if outcome and outcome.get("status") == FAILED:
        return "retry"
    if outcome or (spec.folder / LOG_FILE).is_file():
        return "resume"
    return "new"


def last_error(log: Path) -> str:
    """The run's last `error:` line, else the last line of its log (a traceback's last line), at most 300
    characters."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").replace("\r", "\n").splitlines()]
    except OSError:
        return "no log"
    lines = [line for line in lines if line]
    errors = [line for line in lines if line.startswith("error:")]
    return ((errors or lines or ["the run wrote nothing"])[-1])[:300]


@dataclass
class Attempt:
    """A started trainer process (or torchrun over it) and what its outcome needs."""

    spec: object
    process: subprocess.Popen
    command: list[str]
    started: float
    signalled: bool = False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Send `sig` (the trainer saves a checkpoint on SIGTERM and exits 143)."""
        self.signalled = True
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(sig)

    def finish(self, returncode: int) -> dict:
        """Record the ended attempt in outcome.json and return that outcome."""
        before = read_outcome(self.spec.folder) or {}
        seconds = float(before.get("seconds", 0.0)) + time.time() - self.started
        if returncode == 0:
            status, error = FINISHED, ""
        elif self.signalled:
            status, error = STOPPED, "stopped by a signal; run the command again to resume"
        else:
            status, error = FAILED, last_error(self.spec.folder / LOG_FILE)
        outcome = {"status": status, "returncode": returncode, "error": error, "seconds": seconds,
                   "attempts": int(before.get("attempts", 0)) + 1, "command": self.command}
        with atomic_path(self.spec.folder / OUTCOME_FILE) as tmp:
            tmp.write_text(json.dumps(outcome, indent=1))
        return outcome


def _child_setup(cores):
    """In the child before exec: pin it to its cores, and have the kernel send it SIGTERM should the command
    die without passing a signal on (so it saves instead of training on unobserved)."""
    def setup():
        if cores:
            os.sched_setaffinity(0, cores)
        with contextlib.suppress(Exception):
            import ctypes
            ctypes.CDLL(None).prctl(1, signal.SIGTERM)     # PR_SET_PDEATHSIG
    return setup if hasattr(os, "sched_setaffinity") else None


def start(spec, slot: Slot, *, nproc: int = 1, cwd: str | None = None, new_session: bool = True) -> Attempt:
    """Start the run's trainer in its folder (created), output appended to its train.log. `new_session`: the
    trainer does not get a terminal's Ctrl-C itself; the command passes SIGTERM on instead."""
    cmd = command(spec.argv, slot, nproc=nproc, run_id=f"{spec.dataset}-{spec.arm.name}-{spec.seed}")
    spec.folder.mkdir(parents=True, exist_ok=True)
    with open(spec.folder / LOG_FILE, "a") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd,
                                   env=slot_env(slot), start_new_session=new_session,
                                   preexec_fn=_child_setup(slot.cores))
    return Attempt(spec, process, cmd, time.time())
