"""Run the benchmark scripts and write their printed tables into BENCHMARKS.md.

Every number in BENCHMARKS.md comes from here: each section holds the exact command, the machine it ran
on and the script's own output, verbatim. A run replaces only the sections it produced, so CPU tables
measured here and GPU tables measured on a GPU machine live side by side.

    python -m benchmarks.report                       # every CPU benchmark
    python -m benchmarks.report --device cuda         # the GPU variants, on a GPU machine
    python -m benchmarks.report --only losses --out BENCHMARKS.md
    python -m benchmarks.report --gpu-run benchmarks/results/gpu_run.json   # the GPU run's section (no re-run)
    python -m benchmarks.report --only amcl-study augmentations   # saved comparisons (benchmarks/results/*.json)

Each section names the load average of the machine when its benchmark started: CPU figures taken while other
work ran are marked as measured under load.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import ROOT
from ffcv_amcl.atomic import atomic_path

# name -> (title, argv after the python executable). "{device}" is filled in per run.
BENCHMARKS = {
    "losses": ("AMCL loss: batched heads vs per-head loop vs reference formulation",
               ["-m", "benchmarks.losses", "--device", "{device}"]),
    "loader-cifar": ("Two-view and multi-crop loader vs torchvision DataLoader + PIL, 32x32",
                     ["-m", "benchmarks.loader", "--size", "cifar"]),
    "loader-imagenet": ("Two-view and multi-crop loader vs torchvision ImageFolder + PIL, ImageNet-size JPEGs",
                        ["-m", "benchmarks.loader", "--size", "imagenet"]),
    "train-step": ("Full training step: this project vs a re-creation of the reference step",
                   ["-m", "benchmarks.train_step", "--device", "{device}"]),
    "scaling": ("Training-step scaling with heads C and batch size",
                ["-m", "benchmarks.scaling", "--device", "{device}"]),
}
CPU_ONLY = {"loader-cifar", "loader-imagenet"}  # the loaders run on the host CPU either way
# Saved runs (measured on another machine, or hours long): re-printed from their file, naming their machine.
SAVED = {
    "losses-h100": ("AMCL loss: batched heads vs per-head loop vs reference formulation",
                    ["-m", "benchmarks.losses", "--from-json", "benchmarks/results/losses_cuda_h100.json"],
                    "python -m benchmarks.losses --device cuda --repeats 30 --json losses_cuda.json",
                    "NVIDIA H100 80GB HBM3 (torch 2.11.0+cu130)", "cuda"),
}
# Comparisons (python -m ffcv_amcl.compare, hours long): a plan's OUT/results.json copied to benchmarks/results/ as
# <json>, and its OUT/compare.png beside it as the same name with .png, re-printed with the plan's command.
COMPARISONS = {
    "amcl-study": ("AMCL study: which form trains well, against tuned baselines (3 seeds; Fashion-MNIST and digits)",
                   ROOT / "benchmarks" / "results" / "amcl_vs_tuned.json"),
    "augmentations": ("The paper's augmentation claim: kNN and pair overlap against the augmentation families "
                      "(Fashion-MNIST)", ROOT / "benchmarks" / "results" / "augmentations.json"),
}

# The GPU run (benchmarks/gpu/run.sh; how to run it: benchmarks/gpu/README.md): its gpu_run.json.
GPU_RUN = "gpu-run"
GPU_RUN_JSON = ROOT / "benchmarks" / "results" / "gpu_run.json"
GPU_RUN_TITLE = "GPU run: SimCLR-AMCL on FFCV data end to end, profiler, epochs, compiled vs eager"
GPU_RUN_HOWTO = ("How to run it on a GPU machine, and to bring its figures here: benchmarks/gpu/README.md. The same "
                 "script runs on the CPU with tiny sizes: `bash benchmarks/gpu/run.sh --dry-run` (the test suite runs "
                 "it: tests/test_gpu_run.py).")
GPU_RUN_PENDING = ("No GPU run is recorded (benchmarks/results/gpu_run.json is absent): there are no GPU figures yet "
                   "for the epoch, the loader at 16 workers, the profiler or training.compile. The CPU figures of "
                   "training.compile are in the training-step section (CPU).")

MARK = re.compile(r"<!-- section: (?P<key>[\w.-]+) -->\n.*?<!-- end: (?P=key) -->\n", re.S)
HEADER = """# Benchmarks

Every table below was printed by the command above it, on the machine it names, and copied here by
`python -m benchmarks.report` (GPU sections: `python -m benchmarks.report --device cuda` on a GPU machine).
Nothing here is typed by hand; to refresh a table, run its command again through `python -m benchmarks.report`.

"""


def cpu_busy_share(seconds: float = 2.0) -> float | None:
    """Share of all CPUs' time spent busy over the last `seconds` (Linux /proc/stat; None elsewhere). Unlike the
    load average, it does not carry the last minute's work into a start that is in fact idle."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + (v[4] if len(v) > 4 else 0)          # total, idle + iowait
    try:
        t0, i0 = sample()
        time.sleep(seconds)
        t1, i1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return 1.0 - (i1 - i0) / max(t1 - t0, 1)


def load_note() -> str:
    """How busy the machine was when a benchmark started: CPU busy share over 2 s, and the 1-minute load average."""
    from ffcv_amcl import machine

    load, cores = os.getloadavg()[0], machine.usable_cores()
    share = cpu_busy_share()
    busy = share > 0.25 if share is not None else load > 0.5 * cores
    now = f"CPUs {share:.0%} busy over the 2 s before the start, " if share is not None else ""
    return (f"{now}1-minute load average {load:.1f} on {cores} cores"
            + (": the machine was busy with other work, figures measured under load" if busy else ", idle"))


def shown_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return path.name


def gpu_run_section(path: Path) -> str:
    """The GPU run's section: its summary, re-printed from the run's JSON by benchmarks.gpu.stages, and how
    to run it; without a JSON, the how-to and a note that it has not run."""
    key = f"{GPU_RUN}.cuda"
    head = f"<!-- section: {key} -->\n## {GPU_RUN_TITLE} (CUDA)\n\n"
    if not path.is_file():
        return f"{head}{GPU_RUN_PENDING}\n\n{GPU_RUN_HOWTO}\n\n<!-- end: {key} -->\n"
    argv = ["-m", "benchmarks.gpu.stages", "summary", shown_path(path)]
    proc = subprocess.run([sys.executable, *argv[:3], str(path.resolve())], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    out = proc.stdout.strip()
    if proc.returncode != 0:
        out += f"\n\n[failed with exit code {proc.returncode}]\n{proc.stderr.strip()}"
    run = json.loads(path.read_text())
    env, m = run.get("env", {}), run.get("env", {}).get("machine", {})
    where = (f"{m.get('gpu', m.get('cpu', '?'))} + {m.get('cores', '?')} cores (torch {env.get('torch', '?')}, "
             f"Python {env.get('python', '?')})" + (" -- DRY RUN on the CPU" if env.get("dry_run") else ""))
    return (f"{head}Command: `bash benchmarks/gpu/run.sh` (on the GPU machine); re-printed with "
            f"`python {' '.join(argv)}`  \nMachine: {where}  \nMeasured: {env.get('date', '?')}\n\n"
            f"```\n{out}\n```\n\n{GPU_RUN_HOWTO}\n\n<!-- end: {key} -->\n")


def comparison_section(name: str) -> str:
    """A saved comparison's section: its table as the compare command wrote it, the plan's command, the machine and
    date the results.json records, and its figure when one lies beside the JSON."""
    from ffcv_amcl.compare.table import render

    title, path = COMPARISONS[name]
    if not path.is_file():
        raise SystemExit(f"error: {shown_path(path)} not found: run its plan with python -m ffcv_amcl.compare and "
                         f"copy OUT/results.json (and OUT/compare.png as {path.with_suffix('.png').name}) there")
    results = json.loads(path.read_text())
    key = f"{name}.{results.get('device', 'cpu')}"
    figure = path.with_suffix(".png")
    shown = f"![{name}]({shown_path(figure)})\n\n" if figure.is_file() else ""
    return (f"<!-- section: {key} -->\n## {title} ({results.get('device', 'cpu').upper()})\n\n"
            f"Command: `{results.get('plan_command', results['command'])}` (saved run); re-printed with "
            f"`python -m ffcv_amcl.compare.table {shown_path(path)}`  \nMachine: {results['machine']}  \n"
            f"Measured: {results['date']}\n\n{shown}{render(results)}\n<!-- end: {key} -->\n")


def run_one(name: str, device: str, timeout: float) -> str:
    from ffcv_amcl import machine

    if name in SAVED:
        title, argv, measured_with, where, device = SAVED[name]
    else:
        title, argv = BENCHMARKS[name]
        argv = [a.format(device=device) for a in argv]
        where = measured_with = None
    cmd = [sys.executable, *argv]
    shown = "python " + " ".join(shlex.quote(a) for a in argv)
    if measured_with:
        shown = f"{measured_with}` (saved run); re-printed with `{shown}"
    load = "not measured: a saved run, re-printed" if name in SAVED else load_note()
    started = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    took = time.time() - started
    out = proc.stdout.strip()
    if proc.returncode != 0:
        err = proc.stderr.strip().splitlines()[-15:]
        out += "\n\n[failed with exit code %d]\n%s" % (proc.returncode, "\n".join(err))
    where = where or machine.one_line(machine.describe(device))
    key = f"{name}.{device.split(':')[0]}"
    return (f"<!-- section: {key} -->\n## {title} ({device.split(':')[0].upper()})\n\n"
            f"Command: `{shown}`  \nMachine: {where}  \nMeasured: {time.strftime('%Y-%m-%d')}, "
            f"{took:.0f} s; load {load}\n\n```\n{out}\n```\n\n<!-- end: {key} -->\n")


def merge(path: Path, sections: list[str]) -> None:
    text = path.read_text() if path.exists() else HEADER
    for sec in sections:
        key = MARK.match(sec).group("key")
        pattern = re.compile(rf"<!-- section: {re.escape(key)} -->\n.*?<!-- end: {re.escape(key)} -->\n", re.S)
        if pattern.search(text):
            text = pattern.sub(lambda _: sec, text)
        else:
            text = text.rstrip("\n") + "\n\n" + sec
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS) + sorted(SAVED) + sorted(COMPARISONS) + [GPU_RUN],
                    help="run just these")
    ap.add_argument("--gpu-run", type=Path, default=None, metavar="JSON",
                    help=f"write the GPU run's section from this gpu_run.json (alone, unless --only names more); "
                         f"default {shown_path(GPU_RUN_JSON)} when the GPU run's section is written")
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--timeout", type=float, default=900, help="seconds per benchmark")
    args = ap.parse_args()
    names = args.only or ([GPU_RUN] if args.gpu_run else [*BENCHMARKS, GPU_RUN])
    if args.gpu_run and GPU_RUN not in names:
        names.append(GPU_RUN)
    if args.device != "cpu":
        names = [n for n in names if n not in CPU_ONLY] if not args.only else names
    if args.gpu_run and not args.gpu_run.is_file():
        print(f"error: --gpu-run {args.gpu_run} not found: give the gpu_run.json a GPU run wrote", file=sys.stderr)
        return 2
    sections = []
    for name in names:
        if name == GPU_RUN or name in COMPARISONS:
            sections.append(gpu_run_section(args.gpu_run or GPU_RUN_JSON) if name == GPU_RUN
                            else comparison_section(name))
            print(sections[-1], flush=True)
            continue
        print(f"running {name} on {args.device} ...", flush=True)
        try:
            sections.append(run_one(name, args.device, args.timeout))
        except subprocess.TimeoutExpired:
            print(f"  {name}: timed out after {args.timeout:.0f} s", file=sys.stderr)
        else:
            print(sections[-1], flush=True)
    merge(Path(args.out), sections)
    print(f"wrote {len(sections)} section(s) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
