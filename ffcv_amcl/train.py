"""Train a backbone with SimCLR, MoCo, SimSiam, Barlow Twins or BYOL, with or without AMCL.

    python -m ffcv_amcl.train --config-file rn_configs/digits_quickstart.yaml [--section.param=value ...]
    torchrun --nproc_per_node=8 -m ffcv_amcl.train --config-file rn_configs/rn50_imagenet_simclr_amcl.yaml

One loop for one CPU and many GPUs, read top to bottom: `_train` builds the run's state (`Run`: model,
optimiser, scaler, schedule, loaders, counters), records the untrained network, then alternates
`train_epoch` (the steps) and `end_epoch` (record, kNN and online probe, checkpoint). Pieces the profiler
reuses (so it times the real step): `precision_setup`, `make_optimizer_for`, `make_loaders`, `train_step`.
Exit status: 0 when finished, 2 on a user error, 143 when stopped by SIGTERM after saving (rerun to resume).
"""
from __future__ import annotations

import json
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from ffcv_amcl import distributed as dist
from ffcv_amcl import machine
from ffcv_amcl.atomic import atomic_path, remove_stale_temps
from ffcv_amcl.checkpoint import (RESUME_KEYS, config_mismatch, find_latest, load_checkpoint, load_weights,
                                  save_checkpoint)
from ffcv_amcl.config import parse_config, to_flat
from ffcv_amcl.errors import UserError, check_writable_dir, cli, user_io
from ffcv_amcl.evaluation import extract_features, knn_top1
from ffcv_amcl.evaluation.online import OnlineProbe
from ffcv_amcl.losses.health import TemperatureHealth, at_bound_warning, record_fields
from ffcv_amcl.model.ssl import SSLModel, build_model
from ffcv_amcl.optim import WarmupCosine, make_optimizer
from ffcv_amcl.run_folder import MetricsLog, lock_folder, start_over, warn

SIGTERM_EXIT = 143   # 128 + SIGTERM: stopped on request after a checkpoint; the same command resumes


# ----------------------------------------------------------------------------------------------- the step

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


def train_step(model, batch, optimizer, scaler, schedule: WarmupCosine, step: int, *,
               autocast_dtype: torch.dtype | None = None, clip_grad: float = 0.0, total_steps: int = 1,
               epoch: int = 0):
    """One step: lr from the schedule, loss under autocast, backward (scaled for fp16), optional
    gradient-norm clip, optimiser step, momentum-encoder update. Returns the method's StepOutput (no sync)."""
    core = unwrap(model)
    view_a, view_b = batch[0].to(core.input_dtype), batch[1].to(core.input_dtype)
    core.set_progress(step=step, total_steps=total_steps, epoch=epoch)
    schedule.apply(optimizer, step)
    device_type = view_a.device.type
    with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        out = model(view_a, view_b)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(out.loss).backward()
    if clip_grad > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], clip_grad)
    scaler.step(optimizer)
    scaler.update()
    core.momentum_update()
    return out._replace(loss=out.loss.detach())


# ---------------------------------------------------------------------------------------------- the pieces

def make_loaders(cfg, info: dist.DistInfo, *, with_eval: bool | None = None):
    """(SSL train loader, train-split eval loader, val eval loader). The eval loaders (kNN monitor, online
    probe) exist only on rank 0, with a val set, and when the kNN monitor or the online probe is on."""
    from ffcv_amcl.data.loader import make_eval_loader, make_ssl_loader

    d, t = cfg.data, cfg.training
    train = make_ssl_loader(d.train_dataset, t.batch_size, augs=d.augs, image_size=d.image_size,
                            num_workers=d.num_workers, device=info.device, distributed=info.distributed,
                            seed=t.seed, color_strength=d.color_strength, drop_last=True,
                            crop_scale=tuple(d.crop_scale), augs_b=d.augs_b or None, order=d.order)
    if with_eval is None:
        with_eval = cfg.eval.knn_every > 0 or bool(cfg.eval.online_linear)
    evals = (None, None)
    if info.is_main and d.val_dataset and with_eval:
        size = cfg.eval.image_size or d.image_size
        evals = tuple(make_eval_loader(p, cfg.eval.batch_size, image_size=size, num_workers=d.num_workers,
                                       device=info.device) for p in (d.train_dataset, d.val_dataset))
    return train, *evals


def features_of(model: SSLModel, loader, device, autocast_dtype):
    """Backbone features and labels of a whole split, eval mode (the model is left in train mode)."""
    model.eval()
    try:
        return extract_features(model.features, loader, device=device, autocast_dtype=autocast_dtype)
    finally:
        model.train()


class EpochStats:
    """The current epoch's per-step losses, mean AMCL temperatures and temperature health, kept on the device
    (no host sync per step). `state()` is the partial-epoch total a mid-epoch checkpoint stores."""

    def __init__(self, health: TemperatureHealth | None = None):
        self.losses: list[torch.Tensor] = []
        self.tau: dict[str, torch.Tensor] = {}
        self.health = health
        self.prior_sum, self.prior_n = 0.0, 0          # from a checkpoint taken mid-epoch

    def add(self, loss: torch.Tensor, stats: dict, pairs: dict | None = None) -> None:
        self.losses.append(loss.float())
        for key, value in stats.items():
            prev = self.tau.get(key)
            self.tau[key] = value.float() if prev is None else prev.to(value.device) + value.float()
        if self.health is not None and pairs:
            self.health.add(pairs)

    def state(self) -> dict:
        """Partial-epoch totals for a mid-epoch checkpoint (a collective: call on every rank)."""
        s = self.summary()
        out = {"loss_sum": s["loss_sum"], "n": s["n"],
               "tau": {k: torch.tensor(s[k]) * max(s["n"], 1) for k in self.tau}}
        if self.health is not None:
            out["health"] = self.health.state(dist.sum_across_ranks)
        return out

    def load(self, state: dict) -> None:
        self.prior_sum, self.prior_n = float(state["loss_sum"]), int(state["n"])
        self.tau = dict(state.get("tau", {}))
        if self.health is not None and state.get("health") and dist.rank() == 0:
            self.health.load(state["health"])      # totals over all processes: one rank carries them

    def summary(self, reduce: bool = True) -> dict:
        if self.losses:
            stacked = torch.stack(self.losses)
            if reduce:
                stacked = dist.mean_across_ranks(stacked)
            local = stacked.double().cpu()
        else:
            local = torch.zeros(0, dtype=torch.float64)
        n = self.prior_n + len(local)
        total = self.prior_sum + float(local.sum())
        out = {"loss_sum": total, "n": n, "step_losses": local.tolist()}
        for key, value in self.tau.items():
            v = (dist.mean_across_ranks(value.to(stacked.device)) if reduce and self.losses else value).cpu()
            out[key] = [float(x) / max(n, 1) for x in v.double()]
        return out

    def health_summary(self) -> dict:
        """Temperature health of the epoch over all processes (a collective), {} without AMCL."""
        if self.health is None or not self.health.counts:
            return {}
        return self.health.summary(dist.sum_across_ranks)


def nonfinite_check(losses: list[torch.Tensor], first_step: int, epoch: int, last_ckpt) -> None:
    """Stop with one line when a loss is NaN/inf; names the first bad step. One host sync per call."""
    if not losses:
        return
    stacked = dist.mean_across_ranks(torch.stack(losses))
    bad = (~torch.isfinite(stacked)).nonzero()
    if len(bad):
        i = int(bad[0])
        where = f"last good checkpoint {last_ckpt} is intact" if last_ckpt else "no checkpoint was written yet"
        raise UserError(f"non-finite loss ({float(stacked[i])}) at step {first_step + i} (epoch {epoch + 1}): "
                        f"likely a learning rate too high for this batch, or fp16 overflow; lower "
                        f"--training.lr, keep --training.clip_grad=1.0 or use --training.precision=bf16; "
                        f"{where}")


class StopFlag:
    """SIGTERM (pre-emption) sets the flag; the loop checkpoints at the next step boundary and exits."""

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


# ------------------------------------------------------------------------------------------- the run's state

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
    metrics: MetricsLog
    stop: StopFlag
    steps_per_epoch: int
    epoch: int = 0                 # completed epochs
    step: int = 0                  # completed steps
    skip: int = 0                  # batches of the current epoch already trained on (mid-epoch resume)
    finished: bool = False
    last_ckpt: Path | None = None
    lock: object = None
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

    def new_stats(self) -> EpochStats:
        crit = self.core.criterion if self.core.amcl else None
        return EpochStats(TemperatureHealth(crit.tau_min, crit.tau_max, crit.heads) if crit is not None else None)

    def checkpoint(self, batch_in_epoch: int = 0, partial: dict | None = None) -> None:
        """Save the run's state (rank 0) and wait for every rank. batch_in_epoch > 0: a mid-epoch checkpoint."""
        if self.info.is_main:
            state = {"model": self.core.state_dict(), "optimizer": self.optimizer.state_dict(),
                     "scaler": self.scaler.state_dict(), "epoch": self.epoch, "step": self.step,
                     "schedule_step": self.step, "batch_in_epoch": batch_in_epoch, "seed": self.cfg.training.seed,
                     "config": self.cfg_flat, "epoch_stats": partial, "world_size": dist.world_size(),
                     "torch_version": str(torch.__version__)}
            if self.probe is not None:
                state["probe"] = self.probe.state_dict()
            self.last_ckpt = save_checkpoint(self.folder, state)
        dist.barrier()


def read_resume(cfg, folder: Path, cfg_flat: dict) -> tuple[Path | None, dict | None]:
    """(path, state) of the checkpoint training.resume names (auto: the newest valid one), checked against the
    config before anything is built; (None, None) for a fresh run."""
    t = cfg.training
    if t.resume == "none":
        return None, None
    if t.resume == "auto":
        found = find_latest(folder, warn=lambda msg: warn(msg.removeprefix("warning: ")))
        if not found:
            return None, None
        path, state = found
    else:
        path, state = Path(t.resume), load_checkpoint(t.resume)
    diff = config_mismatch(state["config"], cfg_flat, RESUME_KEYS)
    if diff:
        raise UserError(f"checkpoint {path} does not match this config ({diff}): use another logging.folder, or "
                        f"start over with --training.resume=none --training.overwrite=1")
    return path, state


def prepare_folder(cfg, info: dist.DistInfo):
    """Rank 0 creates and locks the folder, clears a fresh run's old files and writes config.json; returns the
    lock handle (None on other ranks)."""
    folder, lock = Path(cfg.logging.folder), None
    if info.is_main:
        with user_io(folder, "creating"):
            folder.mkdir(parents=True, exist_ok=True)
        check_writable_dir(folder, "logging.folder")
        lock = lock_folder(folder)
        remove_stale_temps(folder)
        if cfg.training.resume == "none":
            start_over(folder, bool(cfg.training.overwrite))
    dist.barrier()
    return lock


def write_config(run: Run, facts: dict) -> None:
    if run.info.is_main:
        with atomic_path(run.folder / "config.json") as tmp:
            tmp.write_text(json.dumps({**run.cfg_flat, "dist.world_size": run.info.world_size, **facts}, indent=2,
                                      sort_keys=True))
    dist.barrier()


def make_probe(cfg, model: SSLModel, info: dist.DistInfo, total_steps: int) -> OnlineProbe | None:
    """The online linear probe when eval.online_linear=1 and a validation set gives it something to report."""
    if not (cfg.eval.online_linear and cfg.data.val_dataset):
        return None
    from ffcv_amcl.data.meta import read_meta
    classes = read_meta(cfg.data.train_dataset).get("num_classes") or 0
    if classes < 2:
        return None
    return OnlineProbe(model.feature_dim, int(classes), lr=cfg.eval.online_lr, total_steps=total_steps,
                       device=info.device, distributed=info.distributed)


def start_run(cfg, facts: dict, info: dist.DistInfo, stop: StopFlag) -> Run:
    """Everything a run needs, restored from a checkpoint when resuming."""
    t = cfg.training
    cfg_flat = to_flat(cfg)
    lock = prepare_folder(cfg, info)
    folder = Path(cfg.logging.folder)
    resumed_from, state = read_resume(cfg, folder, cfg_flat)   # before building anything: mismatches fail fast
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
              train_loader, tuple(evals), make_probe(cfg, model, info, t.epochs * steps_per_epoch),
              MetricsLog(folder, info.is_main, bool(cfg.logging.tensorboard)), stop, steps_per_epoch, lock=lock)
    run.stats = run.new_stats()
    if state is not None:
        restore(run, state, resumed_from)
    if t.compile:
        from ffcv_amcl.model.compiled import compile_model
        compile_model(run.core)
    if info.distributed:
        run.model = DistributedDataParallel(model, device_ids=[info.device] if info.device.type == "cuda" else None,
                                            broadcast_buffers=False)
    write_config(run, facts)
    return run


def restore(run: Run, state: dict, path: Path) -> None:
    """Put the run back where the checkpoint left it: weights, optimiser, counters, partial-epoch totals."""
    load_weights(run.model, state, path)
    try:
        run.optimizer.load_state_dict(state["optimizer"])
        if run.probe is not None and state.get("probe"):
            run.probe.load_state_dict(state["probe"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise UserError(f"checkpoint {path} does not fit this model's optimiser ({str(exc).splitlines()[0][:120]}): "
                        f"use another logging.folder, or start over with --training.resume=none "
                        f"--training.overwrite=1")
    run.scaler.load_state_dict(state["scaler"])
    run.epoch, run.step, run.skip = int(state["epoch"]), int(state["step"]), int(state["batch_in_epoch"])
    if state.get("epoch_stats"):
        run.stats.load(state["epoch_stats"])
    run.last_ckpt = path
    run.log(f"resumed from {path} at epoch {run.epoch}" + (f" (step {run.step})" if run.skip else ""))


# ------------------------------------------------------------------------------------------------ the loop

@dataclass
class EpochResult:
    batches: int = 0          # batches of the epoch done, counting those skipped on a mid-epoch resume
    steps: int = 0            # steps run in this call
    seconds: float = 0.0
    sigterm: bool = False

    def mid_epoch(self, steps_per_epoch: int) -> bool:
        return self.batches < steps_per_epoch


def train_epoch(run: Run) -> EpochResult:
    """The steps of one epoch (from `run.skip` on), until its end, SIGTERM or training.max_steps."""
    from tqdm import tqdm

    t, info = run.cfg.training, run.info
    run.loader.set_epoch(run.epoch)
    run.model.train()
    res, unchecked = EpochResult(), []
    images_per_step = t.batch_size * info.world_size
    bar = tqdm(total=run.steps_per_epoch, initial=run.skip, desc=f"epoch {run.epoch + 1}/{t.epochs}",
               disable=not info.is_main, dynamic_ncols=True, file=sys.stdout)
    t0 = time.perf_counter()
    for i, batch in enumerate(run.loader):
        if i < run.skip:
            continue                      # mid-epoch resume: same batches, already trained on
        out = train_step(run.model, batch, run.optimizer, run.scaler, run.schedule, run.step,
                         autocast_dtype=run.autocast_dtype, clip_grad=t.clip_grad, total_steps=run.total_steps,
                         epoch=run.epoch)
        if run.probe is not None:
            run.probe.step(out.features, batch[2], run.step)
        run.stats.add(out.loss, out.stats, out.pairs)
        loss = out.loss
        unchecked.append(loss)
        run.step, res.steps, res.batches = run.step + 1, res.steps + 1, i + 1
        bar.update(1)
        if res.steps % t.log_every == 0:
            nonfinite_check(unchecked, run.step - len(unchecked), run.epoch, run.last_ckpt)
            unchecked = []
            rate = res.steps * images_per_step / (time.perf_counter() - t0)
            bar.set_postfix(loss=f"{float(loss):.4f}", img_s=f"{rate:.0f}")
        res.sigterm = run.stop.set
        if info.distributed:  # every rank must stop at the same step
            res.sigterm = res.steps % t.log_every == 0 and dist.any_rank(run.stop.set)
        run.finished = res.sigterm or (bool(t.max_steps) and run.step >= t.max_steps)
        if run.finished:
            break
    bar.close()
    res.seconds = time.perf_counter() - t0
    nonfinite_check(unchecked, run.step - len(unchecked), run.epoch, run.last_ckpt)   # before anything is saved
    return res


def save_preempted(run: Run, res: EpochResult) -> None:
    """SIGTERM mid-epoch: save where we are, nothing else."""
    partial = run.stats.state()
    run.checkpoint(res.batches, partial)
    if run.info.is_main:
        print(f"stopped by SIGTERM at step {run.step} (epoch {run.epoch + 1}, batch {res.batches}/"
              f"{run.steps_per_epoch}); saved {run.last_ckpt}; continue with the same command "
              f"(--training.resume=auto)", file=sys.stderr, flush=True)
    run.losses += run.stats.summary()["step_losses"]


def evaluate(run: Run, knn: bool) -> dict:
    """kNN top-1 (when `knn`) and the online probe's validation top-1, rank 0 only."""
    out = {}
    train_loader, val_loader = run.eval_loaders
    if val_loader is None or not (knn or run.probe is not None):
        return out
    dev, amp = run.info.device, run.autocast_dtype
    f_va, y_va = features_of(run.core, val_loader, dev, amp)
    if knn:
        f_tr, y_tr = features_of(run.core, train_loader, dev, amp)
        out["knn_top1"] = knn_top1(f_tr, y_tr, f_va, y_va, k=run.cfg.eval.knn_k, t=run.cfg.eval.knn_t)
    if run.probe is not None:
        out["online_linear_top1"] = run.probe.top1(f_va, y_va)
    return out


def end_epoch(run: Run, res: EpochResult) -> None:
    """The end of an epoch, or of a run cut short by training.max_steps (then the record covers the part of the
    epoch trained so far and a resume rewrites it) or by SIGTERM on an epoch boundary: record, evaluate,
    checkpoint, then log (so metrics.jsonl never holds an epoch whose checkpoint failed)."""
    t, ev = run.cfg.training, run.cfg.eval
    mid = res.mid_epoch(run.steps_per_epoch)
    partial = run.stats.state() if mid else None
    summary, health = run.stats.summary(), run.stats.health_summary()
    run.losses += summary["step_losses"]
    if not mid:
        run.epoch, run.skip = run.epoch + 1, 0
    record = {"epoch": run.epoch + (1 if mid else 0), "step": run.step,
              "loss": summary["loss_sum"] / max(summary["n"], 1), "lr": run.schedule(run.step - 1),
              "images_per_s": res.steps * t.batch_size * run.info.world_size / max(res.seconds, 1e-9)}
    for key in ("tau_pos", "tau_neg"):
        if key in summary and all(math.isfinite(v) for v in summary[key]):
            record.update({f"{key}_head{c}": v for c, v in enumerate(summary[key])})
    record.update(record_fields(health))
    last = run.finished or run.epoch == t.epochs
    record.update(evaluate(run, knn=ev.knn_every > 0 and (last or run.epoch % ev.knn_every == 0)))
    run.stats = run.new_stats()
    if last or (t.checkpoint_every and run.epoch % t.checkpoint_every == 0):
        run.checkpoint(res.batches if mid else 0, partial)
    run.metrics.write(record)
    run.records.append(record)
    log_epoch(run, record, res, health)


def log_epoch(run: Run, record: dict, res: EpochResult, health: dict) -> None:
    t = run.cfg.training
    run.log(f"epoch {record['epoch']}: loss {record['loss']:.4f}, {record['images_per_s']:.0f} images/s"
            + (f", knn_top1 {record['knn_top1']:.2f}%" if "knn_top1" in record else "")
            + (f", online linear top1 {record['online_linear_top1']:.2f}%" if "online_linear_top1" in record else "")
            + (" (stopped by SIGTERM)" if res.sigterm else
               f" (stopped at training.max_steps={t.max_steps})" if run.finished else ""))
    message = at_bound_warning(health, run.core.criterion.tau_min, run.core.criterion.tau_max) if health else None
    if message and run.info.is_main:
        warn(f"epoch {record['epoch']}: {message}")


def first_record(run: Run) -> None:
    """Epoch 0: the untrained network (kNN when the monitor is on); a resumed run drops later records instead."""
    if run.last_ckpt is not None:
        run.metrics.truncate(run.epoch)
        return
    run.metrics.truncate(-1)
    record = {"epoch": 0, "step": 0, "loss": None, "lr": run.schedule(0), "images_per_s": None}
    if run.cfg.eval.knn_every > 0:
        record.update(evaluate(run, knn=True))
        record.pop("online_linear_top1", None)                    # an untrained probe says nothing
        if "knn_top1" in record:
            run.log(f"epoch 0 (untrained): knn_top1 {record['knn_top1']:.2f}%")
    run.metrics.write(record)
    run.records.append(record)


def train(cfg, facts: dict, info: dist.DistInfo) -> dict:
    """The training run a validated config describes; returns a summary (metrics, per-step losses, paths).
    SIGTERM (pre-emption) is caught from the start: the run checkpoints at the next step and returns."""
    stop = StopFlag().install()
    try:
        return _train(cfg, facts, info, stop)
    finally:
        stop.restore()


def _train(cfg, facts: dict, info: dist.DistInfo, stop: StopFlag) -> dict:
    set_backends(cfg, info)
    machine.set_torch_threads(cfg.training.threads)
    run = start_run(cfg, facts, info, stop)
    try:
        first_record(run)
        dist.barrier()
        while run.epoch < cfg.training.epochs and not run.finished:
            res = train_epoch(run)
            if res.sigterm and res.mid_epoch(run.steps_per_epoch):
                save_preempted(run, res)
                break
            end_epoch(run, res)
    finally:
        run.metrics.close()
        if run.lock is not None:
            run.lock.close()                    # the folder is free for the next training
    return {"records": run.records, "losses": run.losses, "checkpoint": str(run.last_ckpt) if run.last_ckpt else None,
            "step": run.step, "epoch": run.epoch, "stopped": stop.set}


def set_backends(cfg, info: dist.DistInfo) -> None:
    if cfg.training.deterministic and info.device.type == "cuda":
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        torch.use_deterministic_algorithms(True, warn_only=True)
    elif info.device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def run(argv: list[str] | None = None) -> dict:
    """Parse and validate (before any work), start torch.distributed when under torchrun, train."""
    cfg, facts = parse_config(argv)
    if cfg.logging.tensorboard:
        try:
            import torch.utils.tensorboard  # noqa: F401
        except ImportError:
            raise UserError("logging.tensorboard=1 needs the tensorboard package: pip install tensorboard "
                            "(or --logging.tensorboard=0)")
    info = dist.init_distributed(cfg.dist.backend, cfg.training.device)
    try:
        return train(cfg, facts, info)
    finally:
        dist.shutdown()


@cli
def main(argv: list[str] | None = None) -> int:
    summary = run(argv)
    return SIGTERM_EXIT if summary["stopped"] else 0


if __name__ == "__main__":
    main()
