"""What one run's process is: its command line (the trainer, or torchrun over it for several GPUs) and its share of
the machine (a slot: CPU cores, threads, GPUs), so that runs side by side never compete for the same cores or GPUs.

On the CPU the usable cores are split evenly between the slots: each run is pinned to its cores and gets as many
torch threads (OMP_NUM_THREADS, training.threads) and FFCV loader threads (data.num_workers) as it has cores per
process. With CUDA each slot gets its own `gpus_per_run` GPUs (CUDA_VISIBLE_DEVICES); more than one runs under
torchrun, whose rendezvous (c10d on a free local port, the run's own id) keeps parallel runs apart.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from ffcv_amcl.errors import check


@dataclass(frozen=True)
class Slot:
    """A run's share of the machine. cores None: leave the affinity alone (a scheduler's job decides);
    threads 0: leave threads and loader workers to the run's settings; gpus None: leave CUDA_VISIBLE_DEVICES."""

    cores: tuple[int, ...] | None = None
    threads: int = 0
    gpus: tuple[int, ...] | None = None


def usable_core_ids() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def uses_cuda(flat: dict, gpus_here: int) -> bool:
    """Whether a run with these resolved settings trains on CUDA (training.device cuda, or auto with a GPU)."""
    device = flat.get("training.device", "auto")
    return device == "cuda" or (device == "auto" and gpus_here > 0)


def make_slots(parallel: int, *, gpus_per_run: int = 1, cuda: bool = False, gpus_here: int = 0,
               cores: list[int] | None = None) -> list[Slot]:
    """`parallel` slots over this machine's cores (and GPUs when the runs use CUDA)."""
    cores = usable_core_ids() if cores is None else cores
    if cuda:
        need = parallel * gpus_per_run
        check(need <= gpus_here, f"--parallel {parallel} x --gpus-per-run {gpus_per_run} needs {need} GPUs and this "
                                 f"machine has {gpus_here}: lower --parallel or --gpus-per-run")
    per = max(1, len(cores) // parallel)
    slots = []
    for i in range(parallel):
        own = tuple(cores[(i * per + j) % len(cores)] for j in range(per))
        gpus = tuple(range(i * gpus_per_run, (i + 1) * gpus_per_run)) if cuda else None
        slots.append(Slot(own, max(1, per // (gpus_per_run if cuda else 1)), gpus))
    return slots


def slot_settings(slot: Slot) -> list[str]:
    """The trainer settings a slot decides (both are free to change when a run resumes)."""
    if not slot.threads:
        return []
    return [f"--training.threads={slot.threads}", f"--data.num_workers={slot.threads}"]


def slot_env(slot: Slot, base: dict | None = None) -> dict:
    env = dict(os.environ if base is None else base)
    if slot.threads:
        env["OMP_NUM_THREADS"] = str(slot.threads)
    if slot.gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in slot.gpus)
    env.setdefault("TQDM_MININTERVAL", "10")        # a run's log gets a progress line every 10 s, not every step
    env.pop("FFCV_AMCL_DEBUG", None)
    return env


def command(argv, slot: Slot, *, nproc: int = 1, run_id: str = "run") -> list[str]:
    """The run's command line: `python -m ffcv_amcl.train ARGV`, under torchrun for nproc > 1 processes."""
    train = ["-m", "ffcv_amcl.train", *argv, *slot_settings(slot)]
    if nproc <= 1:
        return [sys.executable, *train]
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc-per-node={nproc}",
            "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0", f"--rdzv-id={run_id}", *train]
