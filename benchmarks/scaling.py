"""How the training step scales with the number of heads C and with the batch size.

For every (C, batch) pair: pairs/s of the trainer's own `train_step` (forward, backward, clip, SGD) on
synthetic views already on the device (no loader: this is the model's cost), and ms per forward + backward
of the AMCL loss alone on synthetic projections (the profiler's stages, ffcv_amcl.profile). SimCLR-AMCL,
ResNet-18. "vs C=1" is the step rate relative to one head at the same batch: the price of more heads.

On the CPU the default clock is this process's CPU time with one torch thread (--clock process): the
compute cost stays the same when other jobs share the cores, where wall time would mostly measure them.
Rates are then pairs per CPU-second. --clock wall --threads N measures elapsed time instead.

    python -m benchmarks.scaling --device cpu|cuda [--heads 1 3 8] [--batches ...] [--steps N]
"""
from __future__ import annotations

import argparse

import torch

from benchmarks.common import ProcessClock
from ffcv_amcl import machine
from ffcv_amcl.config import parse_config
from ffcv_amcl.errors import UserError, cli
from ffcv_amcl.profile import make_trainee, precision_name, synthetic_views, time_loss, time_model


@cli
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--heads", type=int, nargs="+", default=[1, 3, 8])
    ap.add_argument("--batches", type=int, nargs="+", default=None, help="default: 32 96 CPU, 256 512 1024 CUDA")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per round (default: 1 CPU, 10 CUDA)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds over C; the best round is shown")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 1 CPU, 5 CUDA)")
    ap.add_argument("--stem", choices=["cifar", "imagenet"], default=None, help="default: imagenet CPU, cifar CUDA")
    ap.add_argument("--clock", choices=["wall", "process"], default=None,
                    help="wall: elapsed time; process: CPU time (default: process on CPU, wall on CUDA)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: 1 with the process clock, else all usable cores)")
    args = ap.parse_args(argv)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible; run with --device cpu or on a GPU machine")
    batches = args.batches or ([256, 512, 1024] if cuda else [32, 96])
    steps, warmup = args.steps or (10 if cuda else 1), args.warmup if args.warmup is not None else (5 if cuda else 1)
    stem = args.stem or ("cifar" if cuda else "imagenet")
    if min(args.heads) < 1 or min(batches) < 2 or steps < 1 or args.rounds < 1:
        raise UserError("--heads >= 1, --batches >= 2, --steps >= 1 and --rounds >= 1")
    clock_kind = args.clock or ("wall" if cuda else "process")
    if clock_kind == "process" and cuda:
        raise UserError("--clock process measures CPU time; use --clock wall with --device cuda")
    machine.set_torch_threads(args.threads or (1 if clock_kind == "process" else 0))
    clock = ProcessClock() if clock_kind == "process" else None
    device = torch.device(args.device)
    if cuda:
        torch.backends.cudnn.benchmark = True

    print(f"# SimCLR-AMCL, ResNet-18 ({stem} stem), 32x32 synthetic views on {args.device}; {warmup} warm-up "
          f"step(s), then the best of {args.rounds} interleaved rounds of {steps} timed step(s)", flush=True)
    print(f"# machine: {machine.one_line(machine.describe(str(device)))}", flush=True)
    header = f"{'C':>2} {'batch':>6} {'step pairs/s':>13} {'ms/step':>9} {'loss ms':>9} {'loss share':>11} {'vs C=1':>7}"
    print(header, flush=True)
    base = {}
    for B in batches:
        views = synthetic_views(B, 32, device)
        trainees, cfgs = {}, {}
        for C in args.heads:
            cfgs[C], _ = parse_config(["--data.train_dataset=unused.beton", "--model.method=simclr", "--model.amcl=1",
                                       f"--model.heads={C}", f"--model.stem={stem}", f"--training.batch_size={B}",
                                       f"--training.device={args.device}",
                                       f"--training.precision={'bf16' if cuda else 'fp32'}"],
                                      world_size=1, check_files=False)
            trainees[C] = make_trainee(cfgs[C], device, total_steps=warmup + args.rounds * steps)
            time_model(trainees[C], views, warmup, 1, device)
            time_loss(trainees[C], cfgs[C], B, warmup, 1, device)
        rate = {C: 0.0 for C in args.heads}
        loss_ms = {C: float("inf") for C in args.heads}
        for _ in range(args.rounds):                # interleaved: load from other processes hits every C alike
            for C in args.heads:
                rate[C] = max(rate[C], time_model(trainees[C], views, 0, steps, device, clock=clock))
                loss_ms[C] = min(loss_ms[C], time_loss(trainees[C], cfgs[C], B, 0, max(steps, 3), device,
                                                       clock=clock))
        for C in args.heads:
            base.setdefault(B, rate[C])
            step_ms = B / rate[C] * 1e3
            print(f"{C:>2} {B:>6} {rate[C]:>13,.1f} {step_ms:>9,.1f} {loss_ms[C]:>9.2f} {loss_ms[C] / step_ms:>11.1%} "
                  f"{rate[C] / base[B]:>6.2f}x", flush=True)
        del trainees
        if cuda:
            torch.cuda.empty_cache()
    unit = "pairs per CPU-second, ms of CPU time" if clock_kind == "process" else "pairs/s, ms of elapsed time"
    print(f"# {clock_kind} clock ({unit}); precision {precision_name(torch.bfloat16 if cuda else None)}, "
          f"{torch.get_num_threads()} torch threads; "
          f"'vs C=1': step rate relative to the first C of each batch")
    return 0


if __name__ == "__main__":
    main()
