"""Train a backbone with SimCLR, MoCo, SimSiam, Barlow Twins, BYOL, VICReg or DINO, with or without AMCL.

    python -m ffcv_amcl.train --config-file rn_configs/digits_quickstart.yaml [--section.param=value ...]
    torchrun --nproc_per_node=8 -m ffcv_amcl.train --config-file rn_configs/rn50_imagenet_simclr_amcl.yaml

One loop for one CPU and many GPUs, read top to bottom: `_train` builds the run's state (run_state.start_run:
model, optimiser, scaler, schedule, loaders, monitors, counters; resumed from a checkpoint when there is one),
records the untrained network, then alternates `train_epoch` (the steps) and `end_epoch` (record, kNN and online
probe, checkpoint, log). `train_step` is also what the profiler times.
Exit status: 0 when finished, 2 on a user error, 143 (SIGTERM) or 130 (SIGINT, Ctrl-C) when stopped after saving
(rerun to resume), or when stopped during start-up with nothing to save (ffcv_amcl.preemption).
"""
from __future__ import annotations

from ffcv_amcl.preemption import EXIT_CODES, StopFlag, exit_during_startup, restore

if __name__ == "__main__":      # python -m ffcv_amcl.train: a signal during the seconds of imports below ends it
    exit_during_startup()       # with one line, as during the rest of the start-up

import sys
import time
from dataclasses import dataclass

import torch

from ffcv_amcl import distributed as dist
from ffcv_amcl import machine
from ffcv_amcl.config import parse_config
from ffcv_amcl.errors import cli, warn
from ffcv_amcl.evaluation import extract_features, knn_top1
from ffcv_amcl.model.ssl import SSLModel
from ffcv_amcl.monitoring.collapse import collapse_fields, collapse_warning
from ffcv_amcl.monitoring.epoch import EpochStats
from ffcv_amcl.monitoring.names import EPOCH, IMAGES_PER_S, KNN_TOP1, LOSS, LR, ONLINE_LINEAR_TOP1, SETTINGS_CHANGED, STEP
from ffcv_amcl.monitoring.nonfinite import nonfinite_check
from ffcv_amcl.monitoring.sinks import check_sinks
from ffcv_amcl.monitoring.summary import epoch_line
from ffcv_amcl.optim import WarmupCosine
from ffcv_amcl.run_state import Run, start_run, unwrap

SIGTERM_EXIT = EXIT_CODES["SIGTERM"]   # stopped on request after a checkpoint; the same command resumes


# ----------------------------------------------------------------------------------------------- the step

def train_step(model, batch, optimizer, scaler, schedule: WarmupCosine, step: int, *,
               autocast_dtype: torch.dtype | None = None, clip_grad: float = 0.0, total_steps: int = 1,
               epoch: int = 0):
    """One step: lr from the schedule, loss under autocast, backward (scaled for fp16), optional
    gradient-norm clip, optimiser step, momentum-encoder update. Returns the method's StepOutput (no sync)."""
    core = unwrap(model)
    view_a, view_b = batch[0].to(core.input_dtype), batch[1].to(core.input_dtype)
    local = {"local_views": batch[3].to(core.input_dtype)} if len(batch) > 3 else {}   # multi-crop
    core.set_progress(step=step, total_steps=total_steps, epoch=epoch)
    schedule.apply(optimizer, step)
    device_type = view_a.device.type
    with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        out = model(view_a, view_b, **local)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(out.loss).backward()
    if clip_grad > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], clip_grad)
    scaler.step(optimizer)
    scaler.update()
    core.momentum_update()
    return out._replace(loss=out.loss.detach())


# ------------------------------------------------------------------------------------------------ the loop

@dataclass
class EpochResult:
    batches: int = 0          # batches of the epoch done, counting those skipped on a mid-epoch resume
    steps: int = 0            # steps run in this call
    seconds: float = 0.0
    stopped: bool = False     # by SIGTERM or SIGINT (run.stop.signal)

    def mid_epoch(self, steps_per_epoch: int) -> bool:
        return self.batches < steps_per_epoch


def train_epoch(run: Run) -> EpochResult:
    """The steps of one epoch (from `run.skip` on), until its end, SIGTERM/SIGINT or training.max_steps."""
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
        run.stats.add(out)
        unchecked.append(out.loss)
        run.step, res.steps, res.batches = run.step + 1, res.steps + 1, i + 1
        bar.update(1)
        if res.steps % t.log_every == 0:
            nonfinite_check(unchecked, run.step - len(unchecked), run.epoch, run.last_ckpt)
            unchecked = []
            rate = res.steps * images_per_step / (time.perf_counter() - t0)
            bar.set_postfix(loss=f"{float(out.loss):.4f}", img_s=f"{rate:.0f}")
        res.stopped = run.stop.set
        if info.distributed:  # every rank must stop at the same step
            res.stopped = res.steps % t.log_every == 0 and dist.any_rank(run.stop.set)
            if res.stopped:
                run.stop.follow()
        run.finished = res.stopped or (bool(t.max_steps) and run.step >= t.max_steps)
        if run.finished:
            break
    bar.close()
    res.seconds = time.perf_counter() - t0
    nonfinite_check(unchecked, run.step - len(unchecked), run.epoch, run.last_ckpt)   # before anything is saved
    return res


def save_preempted(run: Run, res: EpochResult) -> None:
    """SIGTERM/SIGINT mid-epoch: save where we are, nothing else."""
    partial = run.stats.state()
    run.checkpoint(res.batches, partial)
    if run.info.is_main:
        print(f"stopped by {run.stop.signal} at step {run.step} (epoch {run.epoch + 1}, batch {res.batches}/"
              f"{run.steps_per_epoch}); saved {run.last_ckpt}; continue with the same command "
              f"(--training.resume=auto)", file=sys.stderr, flush=True)
    run.losses += run.stats.summary()["step_losses"]


def features_of(model: SSLModel, loader, device, autocast_dtype):
    """Backbone features and labels of a whole split, eval mode (the model is left in train mode)."""
    model.eval()
    try:
        return extract_features(model.features, loader, device=device, autocast_dtype=autocast_dtype)
    finally:
        model.train()


def evaluate(run: Run, knn: bool) -> dict:
    """kNN top-1 and the collapse monitors on its features (when `knn`), and the online probe's validation
    top-1, rank 0 only."""
    out = {}
    train_loader, val_loader = run.eval_loaders
    if val_loader is None or not (knn or run.probe is not None):
        return out
    dev, amp = run.info.device, run.autocast_dtype
    f_va, y_va = features_of(run.core, val_loader, dev, amp)
    if knn:
        f_tr, y_tr = features_of(run.core, train_loader, dev, amp)
        out[KNN_TOP1] = knn_top1(f_tr, y_tr, f_va, y_va, k=run.cfg.eval.knn_k, t=run.cfg.eval.knn_t)
        out.update(collapse_fields(run.core, f_tr))
    if run.probe is not None:
        out[ONLINE_LINEAR_TOP1] = run.probe.top1(f_va, y_va)
    return out


def end_epoch(run: Run, res: EpochResult) -> None:
    """The end of an epoch, or of a run cut short by training.max_steps (then the record covers the part of the
    epoch trained so far and a resume rewrites it) or by SIGTERM/SIGINT on an epoch boundary: record, evaluate,
    checkpoint, then log (so metrics.jsonl never holds an epoch whose checkpoint failed)."""
    t, ev = run.cfg.training, run.cfg.eval
    mid = res.mid_epoch(run.steps_per_epoch)
    partial = run.stats.state() if mid else None
    if not mid:
        run.epoch, run.skip = run.epoch + 1, 0
    record, warnings, step_losses = run.stats.record(
        epoch=run.epoch + (1 if mid else 0), step=run.step, lr=run.schedule(run.step - 1),
        images_per_s=res.steps * t.batch_size * run.info.world_size / max(res.seconds, 1e-9))
    run.losses += step_losses
    last = run.finished or run.epoch == t.epochs
    record.update(evaluate(run, knn=ev.knn_every > 0 and (last or run.epoch % ev.knn_every == 0)))
    warnings += collapse_lines(run, record)
    if run.changed:
        record[SETTINGS_CHANGED], run.changed = run.changed, {}
    run.stats = EpochStats.for_model(run.core)
    if last or (t.checkpoint_every and run.epoch % t.checkpoint_every == 0):
        run.checkpoint(res.batches if mid else 0, partial)
    run.metrics.write(record)
    run.records.append(record)
    run.log(epoch_line(record) + (f" (stopped by {run.stop.signal})" if res.stopped else
                                  f" (stopped at training.max_steps={t.max_steps})" if run.finished else ""))
    for line in warnings if run.info.is_main else []:
        warn(f"epoch {record[EPOCH]}: {line}")


def collapse_lines(run: Run, record: dict) -> list[str]:
    """The collapse warning of a record with the collapse monitors (monitoring.collapse), as a list of lines."""
    line = collapse_warning(record, run.cfg.model.method, run.cfg.model.proj_dim)
    return [line] if line else []


def first_record(run: Run) -> None:
    """Epoch 0: the untrained network (kNN when the monitor is on); a resumed run drops later records instead."""
    if run.last_ckpt is not None:
        run.metrics.truncate(run.epoch)
        return
    run.metrics.truncate(-1)
    record = {EPOCH: 0, STEP: 0, LOSS: None, LR: run.schedule(0), IMAGES_PER_S: None}
    if run.cfg.eval.knn_every > 0:
        record.update(evaluate(run, knn=True))
        record.pop(ONLINE_LINEAR_TOP1, None)                    # an untrained probe says nothing
        if KNN_TOP1 in record:
            run.log(epoch_line(record))
        for line in collapse_lines(run, record):
            warn(f"epoch 0: {line}")
    run.metrics.write(record)
    run.records.append(record)


def train(cfg, facts: dict, info: dist.DistInfo) -> dict:
    """The training run a validated config describes; returns a summary (metrics, per-step losses, paths).
    SIGTERM (pre-emption) and SIGINT (Ctrl-C) are caught once the run is built: it checkpoints at the next step and
    returns."""
    stop = StopFlag()
    try:
        return _train(cfg, facts, info, stop)
    finally:
        stop.restore()


def _train(cfg, facts: dict, info: dist.DistInfo, stop: StopFlag) -> dict:
    machine.set_torch_threads(cfg.training.threads)
    machine.keep_freed_memory()
    run = start_run(cfg, facts, info, stop)
    stop.install()
    try:
        first_record(run)
        dist.barrier()
        while run.epoch < cfg.training.epochs and not run.finished:
            res = train_epoch(run)
            if res.stopped and res.mid_epoch(run.steps_per_epoch):
                save_preempted(run, res)
                break
            end_epoch(run, res)
    finally:
        run.metrics.close()
        if run.lock is not None:
            run.lock.close()                    # the folder is free for the next training
    return {"records": run.records, "losses": run.losses, "checkpoint": str(run.last_ckpt) if run.last_ckpt else None,
            "step": run.step, "epoch": run.epoch, "stopped": stop.set, "exit_code": stop.exit_code}


def run(argv: list[str] | None = None) -> dict:
    """Parse and validate (before any work), start torch.distributed when under torchrun, train."""
    cfg, facts = parse_config(argv)
    check_sinks(cfg)
    info = dist.init_distributed(cfg.dist.backend, cfg.training.device)
    try:
        return train(cfg, facts, info)
    finally:
        dist.shutdown()


@cli
def main(argv: list[str] | None = None) -> int:
    previous = exit_during_startup()
    try:
        return run(argv)["exit_code"]
    finally:
        restore(previous)


if __name__ == "__main__":
    main()
