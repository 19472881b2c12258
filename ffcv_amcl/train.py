"""Train a backbone with SimCLR, MoCo, SimSiam, Barlow Twins or BYOL, with or without AMCL.

    python -m ffcv_amcl.train --config-file rn_configs/digits_quickstart.yaml [--section.param=value ...]
    torchrun --nproc_per_node=8 -m ffcv_amcl.train --config-file rn_configs/rn50_imagenet_simclr_amcl.yaml

One loop for one CPU and many GPUs. Pieces the profiler reuses (so it times the real step):
  - `build_model(cfg)` (ffcv_amcl.model.ssl) -> SSLModel whose forward is `(loss, stats)`;
  - `make_optimizer(model, ...)`, `WarmupCosine` (ffcv_amcl.optim), `make_optimizer_for(cfg, model)`;
  - `precision_setup(cfg, device)` -> (autocast dtype or None, GradScaler);
  - `train_step(model, batch, optimizer, scaler, schedule, step, ...)`: one optimisation step.
"""
from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from ffcv_amcl import distributed as dist
from ffcv_amcl.atomic import atomic_path
from ffcv_amcl.checkpoint import config_mismatch, find_latest, load_checkpoint, save_checkpoint
from ffcv_amcl.config import parse_config, to_flat
from ffcv_amcl.errors import UserError, cli
from ffcv_amcl.evaluation import extract_features, knn_top1
from ffcv_amcl.model.ssl import SSLModel, build_model
from ffcv_amcl.optim import WarmupCosine, make_optimizer


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
    gradient-norm clip, optimiser step, momentum-encoder update. Returns (loss, stats), detached, no sync."""
    core = unwrap(model)
    view_a, view_b = batch[0].to(core.input_dtype), batch[1].to(core.input_dtype)
    core.set_progress(step=step, total_steps=total_steps, epoch=epoch)
    schedule.apply(optimizer, step)
    device_type = view_a.device.type
    with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        loss, stats = model(view_a, view_b)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if clip_grad > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], clip_grad)
    scaler.step(optimizer)
    scaler.update()
    core.momentum_update()
    return loss.detach(), stats


# ---------------------------------------------------------------------------------------------- the pieces

def make_loaders(cfg, info: dist.DistInfo):
    """(SSL train loader, kNN train-split loader, kNN val loader); the kNN ones only on rank 0 and only
    when a val set is given and the monitor is on."""
    from ffcv_amcl.data.loader import make_eval_loader, make_ssl_loader

    d, t = cfg.data, cfg.training
    train = make_ssl_loader(d.train_dataset, t.batch_size, augs=d.augs, image_size=d.image_size,
                            num_workers=d.num_workers, device=info.device, distributed=info.distributed,
                            seed=t.seed, color_strength=d.color_strength, drop_last=True,
                            crop_scale=tuple(d.crop_scale), augs_b=d.augs_b or None, order=d.order)
    knn = (None, None)
    if info.is_main and d.val_dataset and cfg.eval.knn_every > 0:
        size = cfg.eval.image_size or d.image_size
        knn = tuple(make_eval_loader(p, cfg.eval.batch_size, image_size=size, num_workers=d.num_workers,
                                     device=info.device) for p in (d.train_dataset, d.val_dataset))
    return train, *knn


def knn_monitor(model: SSLModel, train_loader, val_loader, cfg, device, autocast_dtype) -> float:
    """kNN top-1 (percent) of the backbone's L2-normalised features; the model is left in train mode."""
    model.eval()
    try:
        f_tr, y_tr = extract_features(model.features, train_loader, device=device, autocast_dtype=autocast_dtype)
        f_va, y_va = extract_features(model.features, val_loader, device=device, autocast_dtype=autocast_dtype)
    finally:
        model.train()
    return knn_top1(f_tr, y_tr, f_va, y_va, k=cfg.eval.knn_k, t=cfg.eval.knn_t)


class MetricsLog:
    """metrics.jsonl (one object per epoch) and optional TensorBoard, written by rank 0 only."""

    def __init__(self, folder: Path, enabled: bool, tensorboard: bool):
        self.path, self.enabled, self.tb = folder / "metrics.jsonl", enabled, None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # checked importable by run()
            self.tb = SummaryWriter(str(folder / "tensorboard"))

    def truncate(self, last_epoch: int) -> None:
        """Drop records past `last_epoch` (written before a crash that the resume now repeats)."""
        if not self.enabled or not self.path.exists():
            return
        keep = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("epoch", 0) <= last_epoch]
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(line + "\n" for line in keep))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("epoch",):
                    self.tb.add_scalar(key, value, record["epoch"])
            self.tb.flush()


class EpochStats:
    """Per-step losses and AMCL temperature sums of the current epoch, kept on the device (no sync per step)."""

    def __init__(self):
        self.losses: list[torch.Tensor] = []
        self.tau: dict[str, torch.Tensor] = {}
        self.prior_sum, self.prior_n = 0.0, 0          # from a checkpoint taken mid-epoch

    def add(self, loss: torch.Tensor, stats: dict) -> None:
        self.losses.append(loss.float())
        for key, value in stats.items():
            prev = self.tau.get(key)
            self.tau[key] = value.float() if prev is None else prev.to(value.device) + value.float()

    def state(self) -> dict:
        """Partial-epoch totals for a mid-epoch checkpoint (a collective: call on every rank)."""
        s = self.summary()
        return {"loss_sum": s["loss_sum"], "n": s["n"],
                "tau": {k: torch.tensor(s[k]) * max(s["n"], 1) for k in self.tau}}

    def load(self, state: dict) -> None:
        self.prior_sum, self.prior_n = float(state["loss_sum"]), int(state["n"])
        self.tau = dict(state.get("tau", {}))

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
            v = v.double()
            out[key] = [float(x) / max(n, 1) for x in v]
        return out


def partial_losses(stats: EpochStats) -> list[float]:
    return stats.summary()["step_losses"]


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


def make_state(model, optimizer, scaler, cfg_flat, *, epoch, step, batch_in_epoch, epoch_stats, seed) -> dict:
    """Checkpoint content: tensors and plain containers only (loads with weights_only=True).
    `epoch` counts completed epochs; `batch_in_epoch` > 0 marks a mid-epoch (pre-emption) checkpoint."""
    return {"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(), "epoch": epoch, "step": step, "schedule_step": step,
            "batch_in_epoch": batch_in_epoch, "seed": seed, "config": cfg_flat, "epoch_stats": epoch_stats,
            "world_size": dist.world_size(),
            "torch_version": str(torch.__version__)}


# ------------------------------------------------------------------------------------------------ the loop

def train(cfg, facts: dict, info: dist.DistInfo) -> dict:
    """The training run a validated config describes; returns a summary (metrics, per-step losses, paths).
    SIGTERM (pre-emption) is caught from the start: the run checkpoints at the next step and returns."""
    stop = StopFlag().install()
    try:
        return _train(cfg, facts, info, stop)
    finally:
        stop.restore()


def _train(cfg, facts: dict, info: dist.DistInfo, stop: StopFlag) -> dict:
    t, ev = cfg.training, cfg.eval
    folder = Path(cfg.logging.folder)
    cfg_flat = to_flat(cfg)
    log = (lambda *a: print(*a, flush=True)) if info.is_main else (lambda *a: None)

    if t.deterministic and info.device.type == "cuda":
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        torch.use_deterministic_algorithms(True, warn_only=True)
    elif info.device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    # Resume: read the checkpoint before building anything, so a mismatch fails before any work.
    state, resumed_from = None, None
    if t.resume == "auto":
        found = find_latest(folder, warn=log)
        if found:
            resumed_from, state = found
    elif t.resume != "none":
        resumed_from, state = Path(t.resume), load_checkpoint(t.resume)
    if state is not None:
        diff = config_mismatch(state["config"], cfg_flat)
        if diff:
            raise UserError(f"checkpoint {resumed_from} does not match this config ({diff}): use another "
                            f"logging.folder or --training.resume=none")

    if info.is_main:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / "config.json") as tmp:
            tmp.write_text(json.dumps({**cfg_flat, "dist.world_size": info.world_size, **facts}, indent=2,
                                      sort_keys=True))
    dist.barrier()

    train_loader, knn_train, knn_val = make_loaders(cfg, info)
    steps_per_epoch = len(train_loader)
    total_steps = t.epochs * steps_per_epoch
    torch.manual_seed(t.seed)
    model = build_model(cfg, image_size=cfg.data.image_size, global_batch=t.batch_size * info.world_size,
                        device=info.device)
    if info.distributed and t.sync_bn:
        model = dist.convert_sync_batchnorm(model, info.device)
    optimizer = make_optimizer_for(cfg, model)
    autocast_dtype, scaler = precision_setup(cfg, info.device)
    schedule = WarmupCosine(t.lr, total_steps, round(t.warmup_epochs * steps_per_epoch), t.final_lr)

    epoch, step, skip = 0, 0, 0
    epoch_stats = EpochStats()
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise UserError(f"checkpoint {resumed_from} does not fit this model ({str(exc).splitlines()[0][:120]}): "
                            f"use another logging.folder or --training.resume=none")
        scaler.load_state_dict(state["scaler"])
        epoch, step, skip = int(state["epoch"]), int(state["step"]), int(state["batch_in_epoch"])
        if state.get("epoch_stats"):
            epoch_stats.load(state["epoch_stats"])
        log(f"resumed from {resumed_from} at epoch {epoch}" + (f" (step {step})" if skip else ""))
    if info.distributed:
        model = DistributedDataParallel(model, device_ids=[info.device] if info.device.type == "cuda" else None,
                                        broadcast_buffers=False)
    core = unwrap(model)

    metrics = MetricsLog(folder, info.is_main, bool(cfg.logging.tensorboard))
    records, all_losses, last_ckpt = [], [], resumed_from
    knn_on = knn_train is not None
    if state is None:
        metrics.truncate(-1)
        record = {"epoch": 0, "step": 0, "loss": None, "lr": schedule(0), "images_per_s": None}
        if knn_on:
            record["knn_top1"] = knn_monitor(core, knn_train, knn_val, cfg, info.device, autocast_dtype)
            log(f"epoch 0 (untrained): knn_top1 {record['knn_top1']:.2f}%")
        metrics.write(record)
        records.append(record)
    else:
        metrics.truncate(epoch)
    dist.barrier()

    images_per_step = t.batch_size * info.world_size
    finished = False
    try:
        from tqdm import tqdm
        while epoch < t.epochs and not finished:
            train_loader.set_epoch(epoch)
            model.train()
            unchecked, sigterm, batch_in_epoch = [], False, 0
            t0, steps_run = time.perf_counter(), 0
            bar = tqdm(total=steps_per_epoch, initial=skip, desc=f"epoch {epoch + 1}/{t.epochs}",
                       disable=not info.is_main, dynamic_ncols=True, file=sys.stdout)
            for i, batch in enumerate(train_loader):
                if i < skip:
                    continue                      # mid-epoch resume: same batches, already trained on
                loss, stats = train_step(model, batch, optimizer, scaler, schedule, step,
                                         autocast_dtype=autocast_dtype, clip_grad=t.clip_grad,
                                         total_steps=total_steps, epoch=epoch)
                epoch_stats.add(loss, stats)
                unchecked.append(loss)
                step, steps_run, batch_in_epoch = step + 1, steps_run + 1, i + 1
                bar.update(1)
                if steps_run % t.log_every == 0:
                    nonfinite_check(unchecked, step - len(unchecked), epoch, last_ckpt)
                    unchecked = []
                    rate = steps_run * images_per_step / (time.perf_counter() - t0)
                    bar.set_postfix(loss=f"{float(loss):.4f}", img_s=f"{rate:.0f}")
                sigterm = stop.set
                if info.distributed:  # every rank must stop at the same step
                    sigterm = steps_run % t.log_every == 0 and dist.any_rank(stop.set)
                finished = sigterm or (bool(t.max_steps) and step >= t.max_steps)
                if finished:
                    break
            bar.close()
            seconds = time.perf_counter() - t0
            nonfinite_check(unchecked, step - len(unchecked), epoch, last_ckpt)   # before anything is saved
            mid_epoch = batch_in_epoch < steps_per_epoch
            if sigterm and mid_epoch:  # pre-emption: save where we are, nothing else
                partial = epoch_stats.state()
                if info.is_main:
                    last_ckpt = save_checkpoint(folder, make_state(
                        model, optimizer, scaler, cfg_flat, epoch=epoch, step=step, batch_in_epoch=batch_in_epoch,
                        epoch_stats=partial, seed=t.seed))
                dist.barrier()
                log(f"stopped by SIGTERM at step {step} (epoch {epoch + 1}, batch {batch_in_epoch}/"
                    f"{steps_per_epoch}); saved {last_ckpt}; continue with --training.resume=auto")
                all_losses += partial_losses(epoch_stats)
                break
            # End of an epoch, or of a run cut short by training.max_steps (then the record covers the
            # part of the epoch trained so far, and a resume rewrites it) or by SIGTERM on an epoch boundary.
            summary = epoch_stats.summary()
            all_losses += summary["step_losses"]
            partial = None if not mid_epoch else {"loss_sum": summary["loss_sum"], "n": summary["n"], "tau": {
                k: torch.tensor(summary[k]) * max(summary["n"], 1) for k in ("tau_pos", "tau_neg") if k in summary}}
            if not mid_epoch:
                epoch, skip = epoch + 1, 0
            record = {"epoch": epoch + (1 if mid_epoch else 0), "step": step,
                      "loss": summary["loss_sum"] / max(summary["n"], 1), "lr": schedule(step - 1),
                      "images_per_s": steps_run * images_per_step / max(seconds, 1e-9)}
            for key in ("tau_pos", "tau_neg"):
                if key in summary and all(math.isfinite(v) for v in summary[key]):
                    record.update({f"{key}_head{c}": v for c, v in enumerate(summary[key])})
            last = finished or epoch == t.epochs
            if knn_on and (last or epoch % ev.knn_every == 0):
                record["knn_top1"] = knn_monitor(core, knn_train, knn_val, cfg, info.device, autocast_dtype)
            metrics.write(record)
            records.append(record)
            log(f"epoch {record['epoch']}: loss {record['loss']:.4f}, {record['images_per_s']:.0f} images/s"
                + (f", knn_top1 {record['knn_top1']:.2f}%" if "knn_top1" in record else "")
                + (" (stopped by SIGTERM)" if sigterm else
                   f" (stopped at training.max_steps={t.max_steps})" if finished else ""))
            epoch_stats = EpochStats()
            if last or (t.checkpoint_every and epoch % t.checkpoint_every == 0):
                if info.is_main:
                    last_ckpt = save_checkpoint(folder, make_state(
                        model, optimizer, scaler, cfg_flat, epoch=epoch, step=step,
                        batch_in_epoch=batch_in_epoch if mid_epoch else 0, epoch_stats=partial, seed=t.seed))
            dist.barrier()
    finally:
        if metrics.tb is not None:
            metrics.tb.close()
    return {"records": records, "losses": all_losses, "checkpoint": str(last_ckpt) if last_ckpt else None,
            "step": step, "epoch": epoch, "stopped": stop.set}


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
    run(argv)
    return 0


if __name__ == "__main__":
    main()
