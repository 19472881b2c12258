"""The Python side of the GPU run (benchmarks/gpu/run.sh): each stage's work, and the one JSON file they fill.

Every subcommand adds its part to the run's JSON (written atomically after each stage, so a later failure keeps
what earlier stages measured); `summary` prints the run's table from that JSON, on the GPU machine at the end
of the run and wherever benchmarks.report re-prints a saved run.

    python -m benchmarks.gpu.stages data    --json RUN.json --device cuda --beton X.beton --images 50000 --workers 16
    python -m benchmarks.gpu.stages epoch   --json RUN.json --name amcl-eager --folder DIR -- [train flags]
    python -m benchmarks.gpu.stages add     --json RUN.json --key profile --file profile.json
    python -m benchmarks.gpu.stages tests   --json RUN.json --junit junit.xml --rc 0
    python -m benchmarks.gpu.stages stage   --json RUN.json --name data --rc 0 --seconds 12 --limit 120
    python -m benchmarks.gpu.stages summary RUN.json
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

from ffcv_amcl.atomic import atomic_path  # (light: no torch, which the recording stages do not need)
from ffcv_amcl.errors import UserError, cli

GOAL_SECONDS, GOAL_PAIRS = 2.0, 25_000           # the goal: a CIFAR-10 epoch in 2 s or less, loader never the bound
VARIANTS = {                                      # epoch variants: name -> (label, AMCL, compiled)
    "amcl-eager": ("SimCLR-AMCL C=3", 1, 0),
    "amcl-compiled": ("SimCLR-AMCL C=3", 1, 1),
    "base-eager": ("SimCLR (AMCL off)", 0, 0),
    "base-compiled": ("SimCLR (AMCL off)", 0, 1),
}
SYNC_AUDIT = "amcl-syncs"                         # SimCLR-AMCL, eager, a few steps under CUDA's sync debug mode
SYNC_STEPS = 40


# ------------------------------------------------------------------------------------------------ the JSON

def load(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise UserError(f"{path} is not valid JSON ({exc}): remove it, or point --json elsewhere")


def update(path: Path, key: str, value, *, sub: str | None = None) -> None:
    """Set run[key] (or run[key][sub]) and rewrite the file atomically."""
    run = load(path)
    if sub is None:
        run[key] = value
    else:
        run.setdefault(key, {})[sub] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(run, indent=2, default=str) + "\n")         # stages in the order they ran


# ----------------------------------------------------------------------------------------------- the stages

def record_env(args) -> None:
    """Versions and the machine: what the figures were measured with. UserError if ffcv cannot load or CUDA
    is missing (the JSON keeps what was found)."""
    import importlib.metadata as md

    import torch

    from ffcv_amcl import machine

    info = {"python": platform.python_version(), "executable": sys.executable, "torch": torch.__version__,
            "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
            "machine": machine.describe(args.device), "dry_run": bool(args.dry_run),
            "date": time.strftime("%Y-%m-%d")}
    for pkg in ("ffcv", "fastargs", "numba", "numpy", "torchvision", "opencv-python-headless", "cupy-cuda13x"):
        with contextlib.suppress(md.PackageNotFoundError):
            info[pkg] = md.version(pkg)
    update(args.json, "env", info)
    print(json.dumps(info, indent=2, default=str))
    try:
        import ffcv.loader  # noqa: F401  (the extension and its bundled libraries load)
    except ImportError as exc:
        raise UserError(f"ffcv does not load ({exc}): check the bundled wheels and Debian libraries "
                        f"(bash benchmarks/gpu/prepare.sh) and LD_LIBRARY_PATH")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("no CUDA device is visible: run the GPU run on a GPU machine, or use --dry-run")


def stage_data(args) -> None:
    """The environment (record_env), then a CIFAR-sized synthetic .beton: uniform random 32x32 RGB images and
    10 labels, through write_beton. One stage, one process: importing ffcv costs seconds in every process."""
    record_env(args)
    import numpy as np

    from ffcv_amcl.data.write import ArrayDataset, write_beton

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.images, args.side, args.side, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=args.images)
    started = time.perf_counter()
    write_beton(args.beton, ArrayDataset(images, labels), num_workers=args.workers,
                meta={"dataset": "synthetic-cifar", "split": "train", "num_classes": 10})
    seconds = time.perf_counter() - started
    update(args.json, "data", {"images": args.images, "side": args.side, "workers": args.workers,
                               "write_s": seconds, "bytes": os.path.getsize(args.beton)})


def stage_epoch(args) -> None:
    """Train each variant with ffcv_amcl.train (in this process, one after another) and record its last epoch:
    the earlier ones bear the one-off costs (numba and FFCV pipeline compilation, cuDNN autotuning,
    torch.compile). The variant sets model.amcl and training.compile over the flags given after --."""
    import torch
    from torch._dynamo.utils import counters

    import ffcv_amcl.model.compiled as compiled_module

    # Note what the trainer compiles: training.compile=1 must reach compile_model (the graphs dynamo traces are no
    # proof in one process: a later variant reuses the earlier one's cached graphs).
    compiled_parts: list[str] = []
    real_compile = compiled_module.compile_model

    def noting_compile(*a, **kw):
        names = real_compile(*a, **kw)
        compiled_parts.extend(names)
        return names

    compiled_module.compile_model = noting_compile
    from ffcv_amcl.train import run

    batch = _batch(args.train_args)
    for name in args.name:
        if name == SYNC_AUDIT:
            update(args.json, "syncs", sync_audit(args.train_args, f"{args.folder}/{name}"))
            continue
        _, amcl, comp = VARIANTS[name]
        argv = [*args.train_args, f"--model.amcl={amcl}", f"--training.compile={comp}",
                f"--logging.folder={args.folder}/{name}"]
        counters.clear()                          # graphs traced by this variant only
        compiled_parts.clear()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        summary = run(argv)
        wall = time.perf_counter() - started
        epochs = [r for r in summary["records"] if r.get("images_per_s")]
        if not epochs:
            raise UserError(f"epoch {name}: the run trained no full epoch; give it more images")
        last = epochs[-1]
        steps = last["step"] - (epochs[-2]["step"] if len(epochs) > 1 else 0)
        graphs = int(counters["stats"]["unique_graphs"])
        result = {"variant": name, "epochs": len(epochs), "steps_per_epoch": steps, "pairs_per_epoch": steps * batch,
                  "seconds_per_epoch": steps * batch / last["images_per_s"], "pairs_per_s": last["images_per_s"],
                  "first_epoch_s": epochs[0]["step"] * batch / epochs[0]["images_per_s"],
                  "loss": last.get("loss"), "wall_s": wall, "argv": argv, "compiled_parts": list(compiled_parts),
                  "compiled_graphs": graphs, "compiled": bool(compiled_parts),
                  "backend": compiled_module.compile_backend() if compiled_parts else None}
        if torch.cuda.is_available():
            result["peak_memory_mib"] = torch.cuda.max_memory_allocated() / 2**20
        update(args.json, "epochs", result, sub=name)
        print(json.dumps(result, indent=2))


def sync_audit(train_args: list[str], folder: str, steps: int = SYNC_STEPS) -> dict:
    """Host synchronisations of the training loop on CUDA: ffcv_amcl.train for `steps` steps (SimCLR-AMCL,
    eager) under torch.cuda.set_sync_debug_mode("warn"), which warns at every synchronising call. Counted by
    the Python line that made the call; a line with at least `steps` warnings syncs on every step."""
    import warnings

    import torch

    from ffcv_amcl.train import run

    cuda = torch.cuda.is_available()
    argv = [*train_args, "--model.amcl=1", "--training.compile=0", "--training.epochs=1",
            f"--training.max_steps={steps}", f"--logging.folder={folder}"]
    if cuda:                                        # on the CPU (dry run) the run goes through, uncounted
        torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            done = run(argv)["step"]
    finally:
        if cuda:
            torch.cuda.set_sync_debug_mode(0)
    lines = collections.Counter(_where(w.filename, w.lineno) for w in caught
                                if "synchroniz" in str(w.message).lower())
    return {"available": cuda, "steps": done, "lines": dict(lines.most_common()),
            "per_step": {k: v / done for k, v in lines.most_common() if done and v >= done}}


def _where(filename: str, lineno: int) -> str:
    from benchmarks.common import ROOT

    path = Path(filename)
    for base in (ROOT, *(Path(p) for p in sys.path if p.endswith("site-packages"))):
        with contextlib.suppress(ValueError):
            return f"{path.resolve().relative_to(Path(base).resolve())}:{lineno}"
    return f"{filename}:{lineno}"


def _batch(argv: list[str]) -> int:
    """training.batch_size as the run resolved it (the flags given, over the config file)."""
    from ffcv_amcl.config import parse_config

    cfg, _ = parse_config(argv, world_size=1, check_files=False)
    return cfg.training.batch_size


def stage_add(args) -> None:
    if not args.file.is_file():
        raise UserError(f"{args.file} not found: the stage that writes it failed (see its log above)")
    update(args.json, args.key, load(args.file))


def stage_tests(args) -> None:
    """Counts and failures from pytest's JUnit XML."""
    import xml.etree.ElementTree as ET

    result = {"rc": args.rc, "passed": 0, "failed": 0, "skipped": 0, "failures": []}
    if args.junit.is_file():
        for case in ET.parse(args.junit).getroot().iter("testcase"):
            name = f"{case.get('classname')}::{case.get('name')}"
            bad = case.find("failure") if case.find("failure") is not None else case.find("error")
            if bad is not None:
                result["failed"] += 1
                first = (bad.get("message") or "").strip().splitlines()
                result["failures"].append(f"{name}: {first[0][:200] if first else '(no message)'}")
            elif case.find("skipped") is not None:
                result["skipped"] += 1
            else:
                result["passed"] += 1
    update(args.json, "tests", result)


def stage_record(args) -> None:
    update(args.json, "stages", {"rc": args.rc, "seconds": args.seconds, "limit": args.limit,
                                 "status": args.status or ("ok" if args.rc == 0 else
                                                           "timed out" if args.rc in (124, 137) else "failed")},
           sub=args.name)


# --------------------------------------------------------------------------------------------- the summary

def _fmt(x, spec=",.0f", none="-"):
    return none if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def summary(run: dict) -> str:
    """The run's table: stages, profiler, epochs (eager vs compiled, AMCL on vs off), tests, the goal."""
    env, p = run.get("env", {}), run.get("profile")
    lines = _summary_header(env, run.get("data", {}))
    lines += _summary_stages(run.get("stages", {}))
    if p:
        lines += _summary_profile(p)
    lines += _summary_epochs(run.get("epochs", {}), env, p)
    lines += _summary_syncs(run.get("syncs"))
    lines += _summary_tests(run.get("tests"))
    return "\n".join(lines)


def _summary_header(env: dict, data: dict) -> list[str]:
    """Where the figures come from: the machine, dry run or not, and the .beton written."""
    m = env.get("machine", {})
    where = (f"{m.get('gpu', m.get('cpu', '?'))}, {m.get('cores', '?')} cores, torch {env.get('torch', '?')}, "
             f"Python {env.get('python', '?')}" if env else "environment not recorded")
    lines = [f"# GPU run{' (DRY RUN on the CPU, tiny sizes)' if env.get('dry_run') else ''}: {where}"]
    if data:
        lines.append(f"# data: synthetic CIFAR-sized .beton, {data['images']:,} random {data['side']}x{data['side']} "
                     f"images, written in {data['write_s']:.1f} s by {data['workers']} writer process(es)")
    return lines


def _summary_stages(stages: dict) -> list[str]:
    """Each stage's status and time against its limit: which parts of the run are complete."""
    if not stages:
        return []
    w = max(len(n) for n in stages)
    lines = [f"{'stage':<{w}}  {'status':<10} {'s':>5} {'limit s':>8}"]
    for name, s in stages.items():
        lines.append(f"{name:<{w}}  {s['status']:<10} {_fmt(s.get('seconds'), '5.0f'):>5} "
                     f"{_fmt(s.get('limit'), '8.0f'):>8}")
    return lines


def _summary_profile(p: dict) -> list[str]:
    """The profiler's split of a step (loader, model, loss, full step): where the time goes."""
    step_ms = p["batch_size"] / p["step_pairs_per_s"] * 1e3
    mem = p.get("peak_memory_mib")
    d = collections.defaultdict(lambda: "?", p)            # descriptive fields beyond profile.KEYS
    return [
        f"profiler: {d['method']}{'-AMCL' if p.get('amcl') else ''} C={d['heads']}, {d['arch']}, batch "
        f"{p['batch_size']}, {d['image_size']} px, {d['precision']}, {d['loader_threads']} loader workers",
        f"  loader only          {_fmt(p['loader_pairs_per_s']):>10} pairs/s",
        f"  model only           {_fmt(p['model_pairs_per_s']):>10} pairs/s   (fwd+bwd+optimiser, data on the device)",
        f"  loss only            {p['loss_ms']:>10.2f} ms        ({p['loss_ms'] / step_ms:.1%} of a step)",
        f"  full step            {_fmt(p['step_pairs_per_s']):>10} pairs/s   ({step_ms:.1f} ms/step, waiting for data "
        f"{_fmt(p.get('data_wait_share'), '.1%')})",
        f"  bottleneck: {p['bottleneck']}" + (f"; peak memory {mem:,.0f} MiB" if mem is not None else ""),
    ]


def _summary_epochs(epochs: dict, env: dict, p: dict | None) -> list[str]:
    """The epoch table (eager vs compiled, AMCL on vs off), then whether the goal was met."""
    if not epochs:
        return []
    any_e = next(iter(epochs.values()))
    precision = "fp32 (CPU)" if env.get("dry_run") else "bf16 autocast"
    lines = [f"one epoch (the last of {any_e['epochs']}; {any_e['steps_per_epoch']} steps, "
             f"{any_e['pairs_per_epoch']:,} pairs), {precision}, channels_last",
             "  variant              compile     s/epoch     pairs/s   vs eager   first epoch s"]
    for name, (label, _, comp) in VARIANTS.items():
        e = epochs.get(name)
        if e is None:
            continue
        eager = epochs.get(name.replace("compiled", "eager"))
        ratio = (f"{e['pairs_per_s'] / eager['pairs_per_s']:.2f}x" if comp and eager else "")
        mode = ("compiled" if e["compiled"] else "NOT compiled") if comp else "eager"
        lines.append(f"  {label:<20} {mode:<12} {e['seconds_per_epoch']:>7.2f} {_fmt(e['pairs_per_s']):>11} "
                     f"{ratio:>9} {e['first_epoch_s']:>14.1f}")
    a, b = epochs.get("amcl-eager"), epochs.get("base-eager")
    if a and b:
        lines.append(f"  AMCL on / off (eager): {a['pairs_per_s'] / b['pairs_per_s']:.2f}x pairs/s")
    if any(VARIANTS[n][2] and not e["compiled"] for n, e in epochs.items() if n in VARIANTS):
        lines.append("  NOT compiled: --training.compile=1 did not reach compile_model (see train.py)")
    return lines + _summary_goal(epochs, env, p)


def _summary_goal(epochs: dict, env: dict, p: dict | None) -> list[str]:
    """The goal's verdict from the fastest SimCLR-AMCL variant (none on a dry run: its sizes are tiny)."""
    best = [e for n, e in epochs.items() if n.startswith("amcl")]
    if not best or env.get("dry_run"):
        return []
    top = max(best, key=lambda e: e["pairs_per_s"])
    per_cifar = 50_000 / top["pairs_per_s"]
    return [f"goal (2 s per CIFAR-10 epoch, {GOAL_PAIRS:,} pairs/s): SimCLR-AMCL best {per_cifar:.2f} s per "
            f"50,000 images -> {'met' if per_cifar <= GOAL_SECONDS else 'not met'}"
            + (f"; loader {'is' if p and p['bottleneck'] == 'loader' else 'is not'} the bottleneck"
               if p else "")]


def _summary_syncs(sy: dict | None) -> list[str]:
    """Host synchronisations counted per training step (or why they were not counted)."""
    if sy and sy.get("available"):
        per = sy["per_step"]
        return [f"host syncs in {sy['steps']} training steps (CUDA sync debug mode): "
                f"{sum(sy['lines'].values())} in all, {sum(per.values()):.1f} per step from every-step lines",
                *(f"  {n:5.1f}/step  {where}" for where, n in per.items())]
    if sy:
        return ["host syncs: not counted (no CUDA device)"]
    return []


def _summary_tests(t: dict | None) -> list[str]:
    """The GPU tests' counts and each failure's first line."""
    if not t:
        return []
    return [f"gpu tests: {t['passed']} passed, {t['failed']} failed, {t['skipped']} skipped (pytest rc {t['rc']})",
            *(f"  FAILED {f}" for f in t["failures"])]


def stage_summary(args) -> None:
    if not args.path.is_file():
        raise UserError(f"{args.path} not found: give the JSON a GPU run wrote (gpu_run.json under its $OUT)")
    print(summary(load(args.path)))


# -------------------------------------------------------------------------------------------------- the CLI

@cli
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu.stages", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def command(name, func, helptext):
        p = sub.add_parser(name, help=helptext)
        p.set_defaults(func=func)
        if name != "summary":
            p.add_argument("--json", type=Path, required=True, help="the run's JSON (created if absent)")
        return p

    p = command("data", stage_data, "record versions and the machine, check that ffcv loads, write the .beton")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--beton", required=True)
    p.add_argument("--images", type=int, default=50_000)
    p.add_argument("--side", type=int, default=32)
    p.add_argument("--workers", type=int, default=16)
    p = command("epoch", stage_epoch, "train variants (ffcv_amcl.train flags after --) and record their last epoch")
    p.add_argument("--name", required=True, action="append", choices=[*VARIANTS, SYNC_AUDIT],
                   help=f"repeatable; {SYNC_AUDIT}: count host syncs per step on CUDA instead")
    p.add_argument("--folder", required=True, help="each variant logs to FOLDER/NAME")
    p.add_argument("train_args", nargs=argparse.REMAINDER)
    p = command("add", stage_add, "merge a JSON file under a key")
    p.add_argument("--key", required=True)
    p.add_argument("--file", type=Path, required=True)
    p = command("tests", stage_tests, "record pytest's results from its JUnit XML")
    p.add_argument("--junit", type=Path, required=True)
    p.add_argument("--rc", type=int, required=True)
    p = command("stage", stage_record, "record a stage's exit status and duration")
    p.add_argument("--name", required=True)
    p.add_argument("--rc", type=int, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--limit", type=float, default=None)
    p.add_argument("--status", default=None, help="override: skipped, ...")
    p = command("summary", stage_summary, "print the run's table")
    p.add_argument("path", type=Path)
    args = ap.parse_args(argv)
    if getattr(args, "train_args", None) and args.train_args[0] == "--":
        args.train_args = args.train_args[1:]
    if args.cmd == "data" and args.images < 1:
        raise UserError(f"--images {args.images}: give at least one image")
    args.func(args)
    return 0


if __name__ == "__main__":
    main()
