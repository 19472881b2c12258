"""Where does a training step's time go? Loader, model, loss and the full step, each measured after warm-up.

    python -m ffcv_amcl.profile --config-file rn_configs/X.yaml [--profile.steps=N] [--profile.json=PATH]

The run's own config decides everything (device, batch, model, loss, loader threads), so the numbers are
those of the run it describes. Four stages, one after another, each with its own warm-up:

  loader  the two-view FFCV pipeline alone: batches pulled as fast as they come, nothing else running;
  model   the trainer's `train_step` (forward, backward, clip, optimiser) on synthetic views already on
          the device: what the step costs when data is free;
  loss    forward + backward of the configured loss alone, from synthetic projections (the model's own
          forward with the backbone and projector cut out);
  step    the real `train_step` fed by the real loader, as in training. The host time spent waiting in
          the loader's `next()` is the share of step time spent waiting for data.

The slower of loader and model bounds the step (the verdict). On CUDA every stage is timed with CUDA events
between synchronisations and the peak of allocated memory is recorded. The loader stops (its threads end)
before the model and loss stages, so on a CPU they do not share cores with it.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from fastargs import Param
from torch import nn

from ffcv_amcl import distributed as dist
from ffcv_amcl import machine
from ffcv_amcl.atomic import atomic_path
from ffcv_amcl.checkpoint import load_checkpoint, load_weights, saved_settings
from ffcv_amcl.compatibility import check_compatible
from ffcv_amcl.config import SPEC, Number, Text, parse_argv, resolve, to_flat, to_namespace, validate
from ffcv_amcl.errors import UserError, check_output_file, cli
from ffcv_amcl.model.compiled import compile_model
from ffcv_amcl.model.ssl import build_model
from ffcv_amcl.optim import WarmupCosine
from ffcv_amcl.run_state import make_loaders, make_optimizer_for, precision_setup
from ffcv_amcl.train import train_step

# The profiler's own settings: a fastargs section beside the trainer's (a YAML file may carry it too).
PROFILE_SECTION = {"profile": ("Profiler", dict(
    steps=Param(Number(int, 1), "measured steps (batches) per stage", default=20),
    warmup=Param(Number(int, 0), "unmeasured steps before each stage (JIT, cudnn autotune, allocator)",
                 default=5),
    json=Param(Text(), "write the results as JSON here ('' = print only)", default=""),
))}
SECTIONS = {**SPEC, **PROFILE_SECTION}
KEYS = ("loader_pairs_per_s", "model_pairs_per_s", "loss_ms", "step_pairs_per_s", "bottleneck")  # JSON contract


def parse_profile_config(argv: list[str] | None = None):
    """The trainer's config plus the `profile` section, checked the way the trainer checks it (one process)."""
    values, _ = parse_argv(argv, sections=SECTIONS, prog="ffcv-amcl-profile")
    cfg = resolve(to_namespace(values))
    facts = validate(cfg, world_size=1)
    return cfg, facts


# -------------------------------------------------------------------------------------------------- timing

class Clock:
    """Seconds of device work between start() and stop(): CUDA events around synchronisations on CUDA
    (host timers would stop while kernels are still queued), perf_counter on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.begin = torch.cuda.Event(enable_timing=True)
            self.begin.record()
        self.t0 = time.perf_counter()

    def stop(self) -> float:
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            torch.cuda.synchronize()
            return self.begin.elapsed_time(end) / 1e3
        return time.perf_counter() - self.t0


@dataclass
class Trainee:
    """What `train_step` needs, built by the trainer's own functions."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    schedule: WarmupCosine
    autocast_dtype: torch.dtype | None
    clip_grad: float
    step: int = 0

    def train_step(self, batch, total_steps: int):
        out = train_step(self.model, batch, self.optimizer, self.scaler, self.schedule, self.step,
                         autocast_dtype=self.autocast_dtype, clip_grad=self.clip_grad, total_steps=total_steps)
        self.step += 1
        return out


def make_trainee(cfg, device: torch.device, total_steps: int = 1000) -> Trainee:
    t = cfg.training
    torch.manual_seed(t.seed)
    model = build_model(cfg, image_size=cfg.data.image_size, global_batch=t.batch_size, device=device)
    if t.compile:                                  # as the trainer does: the profile times the run's own step
        compile_model(model)
    optimizer = make_optimizer_for(cfg, model)
    autocast_dtype, scaler = precision_setup(cfg, device)
    schedule = WarmupCosine(t.lr, total_steps, 0, t.final_lr)
    return Trainee(model, optimizer, scaler, schedule, autocast_dtype, t.clip_grad)


def precision_name(dtype: torch.dtype | None) -> str:
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def cycle(loader):
    """Batches forever, epoch after epoch (as training sees them, epoch boundaries included)."""
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        for batch in loader:
            yield batch
        epoch += 1


def synthetic_views(batch_size: int, image_size: int, device: torch.device, seed: int = 0):
    """Normalised-looking float32 channels_last views and labels, as the loader delivers them."""
    g = torch.Generator().manual_seed(seed)
    views = [torch.randn(batch_size, 3, image_size, image_size, generator=g).to(
        device, memory_format=torch.channels_last) for _ in range(2)]
    return views[0], views[1], torch.zeros(batch_size, dtype=torch.long, device=device)


# -------------------------------------------------------------------------------------------------- stages

def time_loader(batches, warmup: int, steps: int, batch_size: int, device: torch.device) -> float:
    """Pairs/s of the loader alone."""
    for _ in range(warmup):
        next(batches)
    clock = Clock(device)
    clock.start()
    for _ in range(steps):
        next(batches)
    return steps * batch_size / clock.stop()


def time_model(trainee: Trainee, batch, warmup: int, steps: int, device: torch.device, *,
               clock: Clock | None = None) -> float:
    """Pairs/s of train_step on one synthetic batch already on the device (no loader)."""
    total = trainee.step + warmup + steps
    for _ in range(warmup):
        trainee.train_step(batch, total)
    clock = clock or Clock(device)
    clock.start()
    for _ in range(steps):
        trainee.train_step(batch, total)
    return steps * batch[0].shape[0] / clock.stop()


@contextlib.contextmanager
def projections_only(model: nn.Module, bank: torch.Tensor):
    """The model's own forward fed from synthetic projections `bank` (C, 2B, D), so that the method's loss runs
    alone: within the block the instance's encoders (online and momentum) are a pass-through backbone and a
    projector that returns the first rows of the bank, and a predictor (SimSiam, BYOL) passes through."""
    skip = nn.Identity()
    rows = lambda h: bank[:, : h.shape[0]]          # noqa: E731
    model.encoders = lambda target: (skip, rows)    # shadows the class's encoders on this instance
    predictor = getattr(model, "predictor", None)
    if predictor is not None:
        model.predictor = skip
    try:
        yield model
    finally:
        del model.encoders
        if predictor is not None:
            model.predictor = predictor


def time_loss(trainee: Trainee, cfg, batch_size: int, warmup: int, steps: int, device: torch.device, *,
              clock: Clock | None = None) -> float:
    """Milliseconds per forward + backward of the configured loss (synthetic projections, the run's precision)."""
    model, dtype = trainee.model, trainee.autocast_dtype
    g = torch.Generator().manual_seed(cfg.training.seed + 1)
    bank = torch.randn(cfg.model.heads, 2 * batch_size, cfg.model.proj_dim, generator=g)
    bank = bank.to(device=device, dtype=dtype or torch.float32).requires_grad_(True)
    dummy = torch.empty(batch_size, 1, device=device)

    def once():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model(dummy, dummy).loss
        bank.grad = None
        model.zero_grad(set_to_none=True)
        loss.backward()

    with projections_only(model, bank):
        for _ in range(warmup):
            once()
        clock = clock or Clock(device)
        clock.start()
        for _ in range(steps):
            once()
        seconds = clock.stop()
    model.zero_grad(set_to_none=True)
    return seconds / steps * 1e3


def time_step(trainee: Trainee, batches, warmup: int, steps: int, batch_size: int,
              device: torch.device) -> tuple[float, float]:
    """(pairs/s of the real step fed by the real loader, share of its time spent waiting in next())."""
    total = trainee.step + warmup + steps
    for _ in range(warmup):
        trainee.train_step(next(batches), total)
    clock = Clock(device)
    waited = 0.0
    clock.start()
    for _ in range(steps):
        t0 = time.perf_counter()
        batch = next(batches)
        waited += time.perf_counter() - t0
        trainee.train_step(batch, total)
    seconds = clock.stop()
    return steps * batch_size / seconds, min(1.0, waited / seconds)


# --------------------------------------------------------------------------------------------------- the run

def read_checkpoint(cfg) -> dict | None:
    """The checkpoint training.resume names (None for auto/none), checked against the config before any work.
    Speed does not depend on the weights, but a checkpoint that does not fit its config is a mistake."""
    path = cfg.training.resume
    if path in ("auto", "none"):
        return None
    state = load_checkpoint(path)
    check_compatible(saved_settings(state), to_flat(cfg), source=f"checkpoint {path}",
                     fix="profile it with the config it was trained with, or drop --training.resume")
    return state


def measure(cfg, trainee: Trainee, train_loader, device: torch.device, log) -> dict:
    """The four stages, one after another, each after its own warm-up."""
    p, B = cfg.profile, cfg.training.batch_size
    log("profile: loader ...")
    batches = cycle(train_loader)
    loader_rate = time_loader(batches, p.warmup, p.steps, B, device)
    batches.close()                                # stop the loader's threads before timing the model
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    log("profile: model ...")
    model_rate = time_model(trainee, synthetic_views(B, cfg.data.image_size, device, cfg.training.seed), p.warmup,
                            p.steps, device)
    log("profile: loss ...")
    loss_ms = time_loss(trainee, cfg, B, p.warmup, p.steps, device)
    log("profile: full step ...")
    batches = cycle(train_loader)
    step_rate, wait_share = time_step(trainee, batches, p.warmup, p.steps, B, device)
    batches.close()
    return {"loader_pairs_per_s": loader_rate, "model_pairs_per_s": model_rate, "loss_ms": loss_ms,
            "step_pairs_per_s": step_rate, "bottleneck": "loader" if loader_rate < model_rate else "model",
            "data_wait_share": wait_share}


def describe(cfg, trainee: Trainee, train_loader, device: torch.device, facts: dict, state) -> dict:
    """What was measured, where: the settings and the machine beside the figures."""
    out = {"device": str(device), "machine": machine.describe(str(device)), "threads": torch.get_num_threads(),
           "loader_threads": train_loader._loader.num_workers if hasattr(train_loader, "_loader") else None,
           "batch_size": cfg.training.batch_size, "precision": precision_name(trainee.autocast_dtype),
           "image_size": cfg.data.image_size, "method": cfg.model.method, "amcl": bool(cfg.model.amcl),
           "heads": cfg.model.heads, "arch": cfg.model.arch, "augs": cfg.data.augs,
           "compiled": bool(cfg.training.compile), "steps": cfg.profile.steps, "warmup": cfg.profile.warmup,
           "train_samples": facts.get("train_samples"),
           "checkpoint": cfg.training.resume if state is not None else None}
    if device.type == "cuda":
        out["peak_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        import resource
        out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def profile(argv: list[str] | None = None) -> dict:
    """Run the four stages and return the results (also printed, and written as JSON when asked)."""
    cfg, facts = parse_profile_config(argv)
    p, t = cfg.profile, cfg.training
    state = read_checkpoint(cfg)
    if p.json:
        check_output_file(p.json, "--profile.json")
    device = dist.pick_device(t.device)
    machine.set_torch_threads(t.threads)
    machine.keep_freed_memory()                     # as the trainer does
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    log = lambda msg: print(msg, flush=True)       # noqa: E731
    log(f"profile: {cfg.model.method}{'-amcl' if cfg.model.amcl else ''}, {cfg.model.arch}, C={cfg.model.heads}, "
        f"batch {t.batch_size}, {cfg.data.image_size} px, {p.warmup} warm-up + {p.steps} measured steps per stage "
        f"on {device}")
    train_loader = make_loaders(cfg, dist.DistInfo(device=device), with_eval=False)[0]
    trainee = make_trainee(cfg, device, total_steps=4 * (p.warmup + p.steps))
    if state is not None:
        load_weights(trainee.model, state, t.resume)
    result = {**measure(cfg, trainee, train_loader, device, log),
              **describe(cfg, trainee, train_loader, device, facts, state)}
    for key in KEYS[:4]:
        if not (math.isfinite(result[key]) and result[key] > 0):
            raise UserError(f"profile measured {key}={result[key]}: the stage did no work; raise "
                            f"--profile.steps")
    log(table(result))
    if p.json:
        with atomic_path(Path(p.json)) as tmp:
            tmp.write_text(json.dumps(result, indent=2) + "\n")
        log(f"profile: wrote {p.json}")
    return result


def table(r: dict) -> str:
    """The results as a small text table."""
    step_ms = r["batch_size"] / r["step_pairs_per_s"] * 1e3
    rows = [
        ("loader only", f"{r['loader_pairs_per_s']:,.0f} pairs/s", f"{r['batch_size'] / r['loader_pairs_per_s'] * 1e3:.1f} ms/batch"),
        ("model only (fwd+bwd+opt)", f"{r['model_pairs_per_s']:,.0f} pairs/s", f"{r['batch_size'] / r['model_pairs_per_s'] * 1e3:.1f} ms/step"),
        ("loss only (fwd+bwd)", f"{r['loss_ms']:.2f} ms", f"{r['loss_ms'] / step_ms:.1%} of a step"),
        ("full step (loader+model)", f"{r['step_pairs_per_s']:,.0f} pairs/s", f"{step_ms:.1f} ms/step"),
    ]
    w0 = max(len(a) for a, _, _ in rows)
    w1 = max(len(b) for _, b, _ in rows)
    mem = (f", peak memory {r['peak_memory_mib']:,.0f} MiB" if "peak_memory_mib" in r else "")
    lines = [f"device {r['device']} ({machine.one_line(r['machine'])}), {r['threads']} torch threads, "
             f"{r['loader_threads']} loader threads, batch {r['batch_size']}, {r['precision']}{mem}",
             f"{'stage'.ljust(w0)}  {'throughput'.rjust(w1)}  per batch", "-" * (w0 + w1 + 20)]
    lines += [f"{a.ljust(w0)}  {b.rjust(w1)}  {c}" for a, b, c in rows]
    lines.append(f"bottleneck: {r['bottleneck']} (loader {r['loader_pairs_per_s']:,.0f} vs model "
                 f"{r['model_pairs_per_s']:,.0f} pairs/s); waiting for data: {r['data_wait_share']:.1%} of step time")
    return "\n".join(lines)


@cli
def main(argv: list[str] | None = None) -> int:
    profile(argv)
    return 0


if __name__ == "__main__":
    main()
