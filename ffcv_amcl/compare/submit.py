"""Runs as jobs through submitit (`--executor submitit`): each run is one job that starts the same trainer command
in the same run folder as a local run would (attempt.start), so results are gathered the same way, from the run
folders. Slurm by default (`--slurm-partition`, `--slurm-time`, ...); `--submitit-cluster local` runs the jobs as
processes of this machine through submitit's own local executor.

A job is checkpointable: when Slurm pre-empts it or its time runs out (submitit's signal), it stops the trainer,
which saves, and submitit requeues it; the requeued job resumes the run. A signal to the command cancels the jobs
in flight (their trainers save, as on pre-emption) and the command waits for them to end.
"""
from __future__ import annotations

import signal
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ffcv_amcl.compare.attempt import FAILED, STOPPED, start
from ffcv_amcl.compare.launch import Slot
from ffcv_amcl.compare.signals import Signals
from ffcv_amcl.errors import UserError, check

CLUSTERS = ("slurm", "local")
POLL_S = 2.0
CANCEL_WAIT_S = 300


@dataclass(frozen=True)
class SubmititOptions:
    cluster: str = "slurm"
    partition: str = ""
    time_min: int = 60
    gpus_per_node: int | None = None       # None: --gpus-per-run for runs on CUDA, 0 for CPU runs
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    account: str = ""
    qos: str = ""
    constraint: str = ""


class TrainJob:
    """The job's callable: one attempt at a run, its trainer's outcome returned (and written in its folder)."""

    def __init__(self):
        self.attempt = None

    def __call__(self, spec, slot: Slot, nproc: int, cwd: str) -> dict:
        self.attempt = start(spec, slot, nproc=nproc, cwd=cwd, new_session=False)
        for sig in (signal.SIGINT, signal.SIGTERM):      # submitit's local cancel sends SIGINT, Slurm SIGTERM
            signal.signal(sig, lambda *_: self.attempt.stop(signal.SIGTERM))
        return self.attempt.finish(self.attempt.process.wait())

    def checkpoint(self, spec, slot: Slot, nproc: int, cwd: str):
        """submitit's pre-emption / time-out hook: stop the trainer (it saves), requeue the same run."""
        import submitit

        if self.attempt is not None and self.attempt.process.poll() is None:
            self.attempt.stop(signal.SIGTERM)
            self.attempt.finish(self.attempt.process.wait())
        return submitit.helpers.DelayedSubmission(TrainJob(), spec, slot, nproc, cwd)


def make_executor(out: Path, options: SubmititOptions, name: str):
    try:
        import submitit
    except ImportError:
        raise UserError("--executor submitit needs the submitit package: pip install 'ffcv-amcl[cluster]' (or "
                        "pip install submitit)")
    check(options.cluster in CLUSTERS, f"--submitit-cluster {options.cluster}: use one of {', '.join(CLUSTERS)}")
    check(options.cluster != "slurm" or shutil.which("sbatch") is not None,
          "--executor submitit submits Slurm jobs and this machine has no sbatch: run the command on a Slurm login "
          "node, or --submitit-cluster local to run the jobs here")
    executor = submitit.AutoExecutor(folder=str(out / "submitit" / "%j"), cluster=options.cluster)
    params = {"name": name, "timeout_min": options.time_min, "tasks_per_node": 1, "nodes": 1}
    params.update({k: v for k, v in (("cpus_per_task", options.cpus_per_task), ("mem_gb", options.mem_gb)) if v})
    slurm = {"slurm_partition": options.partition, "slurm_account": options.account, "slurm_qos": options.qos,
             "slurm_constraint": options.constraint}
    if options.cluster == "slurm":
        params.update({k: v for k, v in slurm.items() if v})
    executor.update_parameters(**params)
    return executor


def job_outcome(job, cancelled: bool) -> dict:
    """The outcome a finished job returned, or what became of a job that returned none: stopped when the command
    cancelled it (its run saved and resumes), else a failure naming what went wrong with the job itself."""
    try:
        return job.result()
    except Exception as exc:                   # the job died outside the trainer (node failure, cancelled, ...)
        if cancelled:
            return {"status": STOPPED, "returncode": None, "error": "job cancelled; run the command again to resume"}
        lines = [line for line in str(exc).strip().splitlines() if line.strip()] or [type(exc).__name__]
        return {"status": FAILED, "returncode": None, "error": f"submitit job {job.job_id}: {lines[-1][:300]}"}


def run_submitit(specs: list, progress, *, out: Path, options: SubmititOptions, parallel: int | None,
                 slot_of, nproc_of, cwd: str) -> tuple[dict, int | None]:
    """Submit every run (at most `parallel` in flight; None: all), poll, gather: ({label: outcome}, exit code of
    a signal or None). `slot_of(spec)`, `nproc_of(spec)`: a job's slot and processes."""
    executor = make_executor(out, options, name=f"compare-{out.name}")
    pending, flight, outcomes = list(specs), {}, {}
    with Signals() as sig:
        cancelled_at = None
        while pending or flight:
            while pending and not sig.first and (parallel is None or len(flight) < parallel):
                spec = pending.pop(0)
                gpus = options.gpus_per_node if options.gpus_per_node is not None else (
                    nproc_of(spec) if spec.flat.get("training.device") != "cpu" and options.cluster == "slurm" else 0)
                if options.cluster == "slurm":
                    executor.update_parameters(gpus_per_node=gpus)
                flight[spec.label] = (executor.submit(TrainJob(), spec, slot_of(spec), nproc_of(spec), cwd), spec)
                progress.started(spec)
            if sig.first and cancelled_at is None:
                cancelled_at = time.time()
                progress.note("stopping: cancelling the jobs in flight (their runs save a checkpoint first)")
                for job, _ in flight.values():
                    job.cancel(check=False)
            for label, (job, spec) in list(flight.items()):
                if job.done():
                    del flight[label]
                    outcomes[label] = job_outcome(job, cancelled_at is not None)
                    progress.ended(spec, outcomes[label])
            if sig.first and (not flight or time.time() - cancelled_at > CANCEL_WAIT_S):
                break
            time.sleep(POLL_S if options.cluster == "slurm" else POLL_S / 4)
    return outcomes, sig.exit_code
