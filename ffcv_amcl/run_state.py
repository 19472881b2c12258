"""A training run's state (`Run`: model, optimiser, scaler, schedule, loaders, monitors, counters), built once by
`start_run`, which resumes it where a checkpoint left it. The loop in train.py carries it from step to step.

Pieces the profiler reuses (so it times the real run): `precision_setup`, `make_optimizer_for`, `make_loaders`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from ffcv_amcl import distributed as dist
from ffcv_amcl.checkpoint import restore_run, save_run
from ffcv_amcl.config import to_flat
from ffcv_amcl.errors import warn
from ffcv_amcl.evaluation.online import OnlineProbe
from ffcv_amcl.evaluation.splits import knn_train_path
from ffcv_amcl.model.ssl import SSLModel, build_model
from ffcv_amcl.monitoring.epoch import EpochStats
from ffcv_amcl.monitoring.metrics import MetricsLog
from ffcv_amcl.monitoring.sinks import open_sinks
from ffcv_amcl.optim import WarmupCosine, make_optimizer
from ffcv_amcl.preemption import StopFlag
from ffcv_amcl.run_folder import Resume, find_resume, prepare_folder, write_config


def precision_setup(cfg, device: torch.device) -> tuple[torch.dtype | None, torch.amp.GradScaler]:
    """Autocast dtype (None = no autocast) and a GradScaler (enabled only for fp16). CPU runs fp32 (or fp64)."""
    if device.type != "cuda" or cfg.training.precision in ("fp32", "fp64"):
        return None, torch.amp.GradScaler(device.type, enabled=False)
    if cfg.training.precision == "fp16":
        return torch.float16, torch.amp.GradScaler("cuda")
    return torch.bfloat16, torch.amp.GradScaler("cuda", enabled=False)


def make_optimizer_for(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    t = cfg.training
    return make_optimizer(model, name=t.optimizer, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay,
                          exclude_bn_bias=bool(t.exclude_bn_bias))


def unwrap(model: torch.nn.Module) -> SSLModel:
    return model.module if isinstance(model, DistributedDataParallel) else model


def make_loaders(cfg, info: dist.DistInfo, *, with_eval: bool | None = None):
    """(SSL train loader, train-split eval loader, val eval loader). The eval loaders (kNN monitor, online
    probe) exist only on rank 0, with a val set, and when the kNN monitor or the online probe is on; the
    train-split one reads data.eval_train_dataset (default: the training set)."""
    from ffcv_amcl.data.loader import make_eval_loader, make_ssl_loader, view_options

    d, t = cfg.data, cfg.training
    train = make_ssl_loader(d.train_dataset, t.batch_size, num_workers=d.num_workers, device=info.device,
                            distributed=info.distributed, seed=t.seed, drop_last=True, order=d.order,
                            **view_options(d))
    if with_eval is None:
        with_eval = cfg.eval.knn_every > 0 or bool(cfg.eval.online_linear)
    evals = (None, None)
    if info.is_main and d.val_dataset and with_eval:
        size = cfg.eval.image_size or d.image_size
        evals = tuple(make_eval_loader(p, cfg.eval.batch_size, image_size=size, num_workers=d.num_workers,
                                       device=info.device) for p in (knn_train_path(d), d.val_dataset))
    return train, *evals


@dataclass
class Run:
    """Everything a training run carries from step to step, built once by `start_run`."""

    cfg: object
    info: dist.DistInfo
    folder: Path
    cfg_flat: dict
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    schedule: WarmupCosine
    autocast_dtype: torch.dtype | None
    loader: object
    eval_loaders: tuple
    probe: OnlineProbe | None
    stop: StopFlag
    steps_per_epoch: int
    metrics: MetricsLog | None = None      # opened once the run is built (a sink may fail to start)
    epoch: int = 0                 # completed epochs
    step: int = 0                  # completed steps
    skip: int = 0                  # batches of the current epoch already trained on (mid-epoch resume)
    finished: bool = False
    last_ckpt: Path | None = None
    lock: object = None
    history: list = field(default_factory=list)    # resumes under changed settings (checkpoints, config.json)
    changed: dict = field(default_factory=dict)    # this resume's changes, until a record carries them
    stats: EpochStats = field(default_factory=EpochStats)
    records: list = field(default_factory=list)
    losses: list = field(default_factory=list)

    @property
    def core(self) -> SSLModel:
        return unwrap(self.model)

    @property
    def total_steps(self) -> int:
        return self.cfg.training.epochs * self.steps_per_epoch

    def log(self, *args) -> None:
        if self.info.is_main:
            print(*args, flush=True)

    def checkpoint(self, batch_in_epoch: int = 0, partial: dict | None = None) -> None:
        """Save the run's state (rank 0) and wait for every rank. batch_in_epoch > 0: a mid-epoch checkpoint."""
        if self.info.is_main:
            self.last_ckpt = save_run(
                self.folder, model=self.core.state_dict(), optimizer=self.optimizer.state_dict(),
                scaler=self.scaler.state_dict(), epoch=self.epoch, step=self.step, batch_in_epoch=batch_in_epoch,
                config=self.cfg_flat, world_size=self.info.world_size, epoch_stats=partial,
                probe=self.probe.state_dict() if self.probe is not None else None, history=self.history)
        dist.barrier()


def start_run(cfg, facts: dict, info: dist.DistInfo, stop: StopFlag) -> Run:
    """Everything a run needs, restored from a checkpoint when resuming (checked before anything is built)."""
    set_backends(cfg, info)
    t, folder, cfg_flat = cfg.training, Path(cfg.logging.folder), to_flat(cfg)
    lock = prepare_folder(folder, is_main=info.is_main, resume=t.resume, overwrite=bool(t.overwrite))
    dist.barrier()
    resume = find_resume(cfg, folder, cfg_flat, info.world_size)
    train_loader, *evals = make_loaders(cfg, info)
    steps_per_epoch = len(train_loader)
    torch.manual_seed(t.seed)
    model = build_model(cfg, image_size=cfg.data.image_size, global_batch=t.batch_size * info.world_size,
                        device=info.device)
    if info.distributed and t.sync_bn:
        model = dist.convert_sync_batchnorm(model, info.device)
    autocast_dtype, scaler = precision_setup(cfg, info.device)
    schedule = WarmupCosine(t.lr, t.epochs * steps_per_epoch, round(t.warmup_epochs * steps_per_epoch), t.final_lr)
    run = Run(cfg, info, folder, cfg_flat, model, make_optimizer_for(cfg, model), scaler, schedule, autocast_dtype,
              train_loader, tuple(evals), OnlineProbe.for_run(cfg, model.feature_dim, info, t.epochs * steps_per_epoch),
              stop, steps_per_epoch, lock=lock, stats=EpochStats.for_model(model))
    if resume.path is not None:
        restore(run, resume)
    if t.compile:
        from ffcv_amcl.model.compiled import compile_model
        compile_model(run.core)
    if info.distributed:
        run.model = DistributedDataParallel(model, device_ids=[info.device] if info.device.type == "cuda" else None,
                                            broadcast_buffers=False)
    run.metrics = MetricsLog(folder, info.is_main, open_sinks(cfg, folder, cfg_flat) if info.is_main else [])
    if info.is_main:
        write_config(folder, {**cfg_flat, "dist.world_size": info.world_size}, facts, run.history)
    dist.barrier()
    return run


def restore(run: Run, resume: Resume) -> None:
    """Put the run back where the checkpoint left it: weights, optimiser, counters, partial-epoch totals."""
    state = resume.state
    restore_run(state, resume.path, model=run.model, optimizer=run.optimizer, scaler=run.scaler, probe=run.probe)
    run.epoch, run.step, run.skip = int(state["epoch"]), int(state["step"]), int(state["batch_in_epoch"])
    if state["epoch_stats"]:
        run.stats.load(state["epoch_stats"])
    run.last_ckpt, run.history, run.changed = resume.path, resume.history, resume.changed
    run.log(f"resumed from {resume.path} at epoch {run.epoch}" + (f" (step {run.step})" if run.skip else ""))
    if run.changed and run.info.is_main:
        warn(f"resuming under changed settings ({', '.join(run.changed)}), as --training.resume_changed=1 asks; "
             f"recorded in config.json's history and the next metrics record")


def set_backends(cfg, info: dist.DistInfo) -> None:
    if cfg.training.deterministic and info.device.type == "cuda":
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        torch.use_deterministic_algorithms(True, warn_only=True)
    elif info.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
