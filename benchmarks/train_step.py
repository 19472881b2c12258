"""Full SimCLR-AMCL training step: this project vs a re-creation of the reference implementation's step.

Both sides train the same network (torchvision ResNet-18, C projection heads F->F->128, AMCL loss with the
shared temperature network) on the same 32x32 images, on the same device, in one run:

  ours       FFCV .beton + numba two-view pipeline (crop, flip, colour jitter, grayscale), normalised on the
             device; build_model (heads as stacked weights, one einsum), channels_last, bf16 autocast on
             CUDA; the trainer's own train_step (ffcv_amcl.train).
  compiled   the same, with training.compile's compile_model (torch.compile, inductor, of the backbone, the
             heads and the AMCL loss), same initial weights; its compilation (the first step) is timed apart
             and excluded from the rates. --compile=0 leaves it out.
  reference  torchvision DataLoader over in-memory uint8 images, PIL two-view augmentation (RandomResizedCrop,
             RandomHorizontalFlip, ColorJitter(0.4, 0.4, 0.4, 0.1) p=0.8, RandomGrayscale p=0.2, ToTensor,
             Normalize), fp32, NCHW; the backbone runs once per view; a Python loop over C separate
             nn.Sequential heads; the AMCL loss loops over heads and directions and runs the temperature
             network on every anchor-negative pair (benchmarks.common.ReferenceAMCL, checked equal to the
             project's loss at start-up); plain SGD step.

Rounds alternate (ours, compiled, reference, ours, ...) so that load from other processes hits both alike;
each round has its own warm-up; the table shows each side's best round (the least disturbed). CPU default: ImageNet
stem and batch 64 (the CIFAR stem at batch 512 takes minutes per step on two cores); CUDA default: CIFAR stem, batch
512.

    python -m benchmarks.train_step --device cpu|cuda [--batch N] [--steps N] [--rounds N] [--compile 0|1]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmarks.common import ProcessClock, ReferenceAMCL, check_reference
from ffcv_amcl import distributed as dist
from ffcv_amcl import machine
from ffcv_amcl.config import parse_config
from ffcv_amcl.errors import UserError, cli
from ffcv_amcl.losses.amcl import AMCLContrastive
from ffcv_amcl.model.compiled import compile_backend, compile_model
from ffcv_amcl.model.backbone import make_backbone
from ffcv_amcl.profile import Clock, cycle, make_trainee, precision_name, synthetic_views, time_step
from ffcv_amcl.run_state import make_loaders


# ---------------------------------------------------------------------------------------------------- data

def images(count: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` 32x32 RGB digits (the embedded set, tiled when more are asked for)."""
    from ffcv_amcl.data.digits import load_digits

    x, y = load_digits("train")
    reps = -(-count // len(x))
    return np.concatenate([x] * reps)[:count], np.concatenate([y] * reps)[:count]


class TwoViewPIL(torch.utils.data.Dataset):
    """torchvision-CIFAR-style dataset: uint8 array -> PIL image -> two independently augmented views."""

    def __init__(self, x, y, mean, std, size=32):
        import torchvision.transforms as T

        self.x, self.y = x, y
        self.transform = T.Compose([
            T.RandomResizedCrop(size, scale=(0.08, 1.0)),
            T.RandomHorizontalFlip(p=0.5),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.ToTensor(),
            T.Normalize([m / 255 for m in mean], [s / 255 for s in std]),
        ])

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        from PIL import Image

        img = Image.fromarray(self.x[i])
        return self.transform(img), self.transform(img), int(self.y[i])


# --------------------------------------------------------------------------------------------- reference

class ReferenceSimCLR(nn.Module):
    """Backbone per view, one nn.Sequential per head in a Python loop, reference AMCL loss formulation."""

    def __init__(self, heads: int, stem: str, dim: int = 128):
        super().__init__()
        self.backbone = make_backbone("resnet18", stem=stem, image_size=32)
        f = self.backbone.feature_dim
        self.heads = nn.ModuleList(nn.Sequential(nn.Linear(f, f), nn.ReLU(inplace=True), nn.Linear(f, dim))
                                   for _ in range(heads))
        self.criterion = ReferenceAMCL(AMCLContrastive(dim, heads, form="ref", validate=False))

    def forward(self, view_a, view_b):
        ha, hb = self.backbone(view_a), self.backbone(view_b)
        za = torch.stack([head(ha) for head in self.heads])
        zb = torch.stack([head(hb) for head in self.heads])
        return self.criterion(za, zb)


def process_clock_rate(trainee, batch, steps: int) -> float:
    """Pairs per CPU-second of this process for `steps` train_steps on one batch already in memory (no loader):
    on a CPU shared with other work, the process clock counts only this process's own work."""
    total = trainee.step + steps + 1
    trainee.train_step(batch, total)                       # warm (allocator, caches)
    clock = ProcessClock()
    clock.start()
    for _ in range(steps):
        trainee.train_step(batch, total)
    return steps * batch[0].shape[0] / clock.stop()


def reference_round(model, optimizer, batches, warmup: int, steps: int, batch_size: int, device) -> tuple:
    """(pairs/s, data-wait share) of the reference loop: host-to-device copy, forward, backward, SGD step."""
    def one(batch):
        a = batch[0].to(device, non_blocking=True)
        b = batch[1].to(device, non_blocking=True)
        loss = model(a, b)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        one(next(batches))
    clock, waited = Clock(device), 0.0
    clock.start()
    for _ in range(steps):
        t0 = time.perf_counter()
        batch = next(batches)
        waited += time.perf_counter() - t0
        one(batch)
    seconds = clock.stop()
    return steps * batch_size / seconds, min(1.0, waited / seconds)


# --------------------------------------------------------------------------------------------------- main

@cli
def main(argv=None) -> int:
    """Build the sides, time them in alternating rounds, print each side's best round and the speed-ups."""
    args = parse_args(argv)
    if args.cuda:
        torch.backends.cudnn.benchmark = True
    machine.set_torch_threads(args.cores)         # every side, every round (the loaders keep it)
    machine.keep_freed_memory()                   # the trainer's allocator setting, for every side
    diff = check_reference()
    x, y = images(args.images)
    with tempfile.TemporaryDirectory() as tmp:
        cfg, meta, ours_loader, ours = build_ours(args, x, y, tmp)
        trainees, compiled_info = {"ours": ours}, None
        if args.compile:
            trainees["compiled"], parts, compile_s = build_compiled(args, cfg)
            compiled_info = (parts, compile_s)
        reference = build_reference(args, x, y, meta)
        print_header(args, len(x), diff, compiled_info)
        rates, waits = timed_rounds(args, trainees, ours_loader, reference)
        cpu_rates = process_clock_rounds(args, trainees, cfg)
    rate, wait = best_rounds(args.rounds, rates, waits)
    print_table(args, [*trainees, "ref"], rate, wait, cpu_rates, precision_name(ours.autocast_dtype))
    print_speedups(args, rates, rate, cpu_rates)
    return 0


def parse_args(argv) -> argparse.Namespace:
    """The flags, with each device's defaults filled in (CPU runs must stay small enough for two cores)."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.train_step", description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--batch", type=int, default=None, help="default: 64 on CPU, 512 on CUDA")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per round (default: 2 CPU, 30 CUDA)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps per round (default: 1 CPU, 5 CUDA)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per side (best shown)")
    ap.add_argument("--heads", type=int, default=3)
    ap.add_argument("--stem", choices=["cifar", "imagenet"], default=None,
                    help="default: imagenet on CPU, cifar on CUDA")
    ap.add_argument("--workers", type=int, default=None,
                    help="loader threads (ours) / DataLoader workers (reference); default: 2 on CPU, "
                         "min(16, cores) on CUDA")
    ap.add_argument("--images", type=int, default=None, help="dataset size (default: 1437 CPU, 50000 CUDA)")
    ap.add_argument("--compile", type=int, choices=[0, 1], default=1,
                    help="1 = also time our step compiled (training.compile=1) beside the eager one")
    args = ap.parse_args(argv)
    args.cuda = cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible; run with --device cpu or on a GPU machine")
    args.batch = args.batch or (512 if cuda else 64)
    args.steps = args.steps or (30 if cuda else 2)
    args.warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    args.stem = args.stem or ("cifar" if cuda else "imagenet")
    args.cores = machine.usable_cores()
    args.workers = args.workers or (min(16, args.cores) if cuda else 2)
    if args.batch < 2 or args.steps < 1 or args.rounds < 1 or args.heads < 1:
        raise UserError("--batch >= 2, --steps, --rounds and --heads >= 1")
    args.images = args.images or (50000 if cuda else 1437)
    args.torch_device = torch.device("cuda" if cuda else "cpu")
    return args


def build_ours(args, x, y, tmp: str) -> tuple:
    """(config, .beton sidecar, loader, trainee) of our side: the images written to a .beton in `tmp`, read by
    the trainer's own loader and trained by its own train_step."""
    from ffcv_amcl.data.meta import read_meta
    from ffcv_amcl.data.write import ArrayDataset, write_beton

    beton = Path(tmp) / "bench.beton"
    with contextlib.redirect_stdout(sys.stderr):           # its progress line is not part of the table
        write_beton(beton, ArrayDataset(x, y), num_workers=min(args.cores, 8),
                    meta={"dataset": "digits-tiled", "split": "train", "num_classes": 10})
    meta = read_meta(beton)
    cfg, _ = parse_config([f"--data.train_dataset={beton}", f"--data.num_workers={args.workers}",
                           "--data.augs=default", "--model.method=simclr", "--model.amcl=1",
                           f"--model.heads={args.heads}", f"--model.stem={args.stem}",
                           f"--training.batch_size={args.batch}", "--training.lr=0.06",
                           f"--training.device={args.device}",
                           f"--training.precision={'bf16' if args.cuda else 'fp32'}", "--eval.knn_every=0",
                           f"--logging.folder={tmp}/run"], world_size=1)
    device = args.torch_device
    loader = make_loaders(cfg, dist.DistInfo(device=device))[0]
    return cfg, meta, loader, make_trainee(cfg, device, total_steps=args.rounds * (args.warmup + args.steps))


def build_compiled(args, cfg) -> tuple:
    """(trainee, compiled parts, compile seconds) of the compiled side: compiled by its first step, timed here
    so that the rates exclude it."""
    total = args.rounds * (args.warmup + args.steps) + 1
    compiled = make_trainee(cfg, args.torch_device, total_steps=total)
    parts = compile_model(compiled.model)
    started = time.perf_counter()                        # the first step compiles
    views = synthetic_views(args.batch, cfg.data.image_size, args.torch_device, cfg.training.seed)
    compiled.train_step(views, total)
    if args.cuda:
        torch.cuda.synchronize()
    return compiled, parts, time.perf_counter() - started


def build_reference(args, x, y, meta: dict) -> tuple:
    """(model, optimiser, DataLoader) of the reference side, normalised with the .beton's own mean and std."""
    torch.manual_seed(0)
    model = ReferenceSimCLR(args.heads, args.stem).to(args.torch_device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06, momentum=0.9, weight_decay=5e-4)
    loader = torch.utils.data.DataLoader(TwoViewPIL(x, y, meta["mean"], meta["std"]), batch_size=args.batch,
                                         shuffle=True, num_workers=args.workers, pin_memory=args.cuda,
                                         drop_last=True)
    return model, optimizer, loader


def print_header(args, count: int, diff: float, compiled_info) -> None:
    """What is measured, on what, and that the reference loss was checked: the '#' lines above the rounds."""
    print(f"# SimCLR-AMCL training step, ResNet-18 ({args.stem} stem), C={args.heads}, batch {args.batch}, 32x32, "
          f"{count} images, {args.device}", flush=True)
    print(f"# machine: {machine.one_line(machine.describe(str(args.torch_device)))}", flush=True)
    print(f"# reference loss (benchmarks.common.ReferenceAMCL) = AMCLContrastive(form='ref') "
          f"(max rel diff {diff:.0e}, float64 check)", flush=True)
    if compiled_info:
        parts, compile_s = compiled_info
        print(f"# compiled: compile_model -> torch.compile(backend={compile_backend()}) of {', '.join(parts)}; "
              f"first step (compilation) {compile_s:,.1f} s, excluded from the rates", flush=True)


def timed_rounds(args, trainees: dict, ours_loader, reference) -> tuple[dict, dict]:
    """({side: pairs/s per round}, {side: data-wait share per round}), the sides alternating within each round
    so that load from other processes hits them alike."""
    rates = {k: [] for k in (*trainees, "ref")}
    waits = {k: [] for k in (*trainees, "ref")}
    model, optimizer, loader = reference
    for r in range(args.rounds):
        for side, trainee in trainees.items():
            batches = cycle(ours_loader)
            rate, wait = time_step(trainee, batches, args.warmup, args.steps, args.batch, args.torch_device)
            batches.close()                      # its threads stop before the next side runs
            rates[side].append(rate)
            waits[side].append(wait)
        batches = iter_forever(loader)
        rate, wait = reference_round(model, optimizer, batches, args.warmup, args.steps, args.batch,
                                     args.torch_device)
        batches.close()
        rates["ref"].append(rate)
        waits["ref"].append(wait)
        print(f"# round {r + 1}: " + ", ".join(f"{'reference' if k == 'ref' else k} {v[-1]:,.1f} pairs/s"
                                                for k, v in rates.items()), flush=True)
    return rates, waits


def process_clock_rounds(args, trainees: dict, cfg) -> dict:
    """{side: pairs per CPU-second per round} of the eager and compiled model steps on the CPU (empty lists on
    CUDA or without --compile): one torch thread (no OpenMP spinning) and synthetic views, so that load from
    other processes does not move the comparison."""
    cpu_rates = {side: [] for side in trainees}
    if args.cuda or not args.compile:
        return cpu_rates
    torch.set_num_threads(1)
    views = synthetic_views(args.batch, cfg.data.image_size, args.torch_device, cfg.training.seed + 1)
    for _ in range(args.rounds):
        for side, trainee in trainees.items():
            cpu_rates[side].append(process_clock_rate(trainee, views, args.steps))
    torch.set_num_threads(args.cores)
    print("# process clock, 1 thread: " + "; ".join(
        f"{side} " + ", ".join(f"{v:.1f}" for v in cpu_rates[side]) for side in trainees)
        + " pairs per CPU-second", flush=True)
    return cpu_rates


def best_rounds(rounds: int, rates: dict, waits: dict) -> tuple[dict, dict]:
    """Each side's (rate, wait) from its fastest round: the one least disturbed by other processes."""
    best = {k: max(range(rounds), key=lambda i: v[i]) for k, v in rates.items()}
    return {k: rates[k][best[k]] for k in rates}, {k: waits[k][best[k]] for k in waits}


def print_table(args, columns: list, rate: dict, wait: dict, cpu_rates: dict, ours_precision: str) -> None:
    """The side-by-side table: how each side is built, then its best step rate and data wait."""
    ours_kind = ("FFCV + numba, {w} threads".format(w=args.workers), "stacked einsum, phi per view",
                 f"{ours_precision}, channels_last")
    kinds = {"ours": ours_kind, "compiled": ours_kind,
             "ref": (f"DataLoader + PIL, {args.workers} workers", "per-head loop, phi per pair", "fp32, NCHW")}
    rows = [
        ("loader", *(kinds[k][0] for k in columns)),
        ("heads / loss", *(kinds[k][1] for k in columns)),
        ("precision, layout", *(kinds[k][2] for k in columns)),
        ("torch.compile", *(compile_backend() if k == "compiled" else "no" for k in columns)),
        ("step pairs/s", *(f"{rate[k]:,.1f}" for k in columns)),
        ("ms per step", *(f"{args.batch / rate[k] * 1e3:,.1f}" for k in columns)),
        ("waiting for data", *(f"{wait[k]:.1%}" for k in columns)),
    ]
    if any(cpu_rates.values()):
        med = {k: statistics.median(v) for k, v in cpu_rates.items()}
        rows.append(("model step, pairs/CPU-s", *(f"{med[k]:,.1f}" if k in med else "-" for k in columns)))
    header = ("", *("reference" if k == "ref" else k for k in columns))
    widths = [max(len(r[i]) for r in (*rows, header)) for i in range(len(header))]
    print(f"# best of {args.rounds} alternating rounds, {args.steps} timed steps after {args.warmup} warm-up per "
          f"round; {args.cores} torch threads")
    for row in (header, *rows):
        print(f"{row[0]:<{widths[0]}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(row[1:], widths[1:])))


def print_speedups(args, rates: dict, rate: dict, cpu_rates: dict) -> None:
    """The ratios under the table: ours vs the reference, and compiled vs eager (best, per round, process clock)."""
    print(f"speed-up (ours / reference): {rate['ours'] / rate['ref']:.2f}x")
    if args.compile:
        per_round = sorted(c / e for c, e in zip(rates["compiled"], rates["ours"]))
        print(f"speed-up (compiled / ours eager), step with loader: {rate['compiled'] / rate['ours']:.2f}x best vs "
              f"best; per round (back to back) {', '.join(f'{r:.2f}x' for r in per_round)}, "
              f"median {statistics.median(per_round):.2f}x")
    if any(cpu_rates.values()):
        per_round = sorted(c / e for c, e in zip(cpu_rates["compiled"], cpu_rates["ours"]))
        print(f"speed-up (compiled / ours eager), model step on the process clock, 1 thread: median "
              f"{statistics.median(per_round):.2f}x (rounds {', '.join(f'{r:.2f}x' for r in per_round)})")
        print("# 'model step, pairs/CPU-s': median over rounds of train_step on views in memory, 1 torch thread, "
              "pairs per CPU-second of this process (robust to other processes' load)")


def iter_forever(loader):
    """DataLoader batches across epochs (workers restart each epoch, as in the reference)."""
    while True:
        with stdout_to_stderr():   # numba's TBB pool warns on stdout when the workers fork; keep the table clean
            it = iter(loader)
        yield from it


@contextlib.contextmanager
def stdout_to_stderr():
    """Point file descriptor 1 at stderr for a while (C-level prints included)."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


if __name__ == "__main__":
    main()
