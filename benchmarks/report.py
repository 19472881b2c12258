"""Run the benchmark scripts and write their printed tables into BENCHMARKS.md.

Every number in BENCHMARKS.md comes from here: each section holds the exact command, the machine it ran
on and the script's own output, verbatim. A run replaces only the sections it produced, so CPU tables
measured here and GPU tables measured on a GPU machine live side by side.

    python benchmarks/report.py                       # every CPU benchmark
    python benchmarks/report.py --device cuda         # the GPU variants, on a GPU machine
    python benchmarks/report.py --only losses --out BENCHMARKS.md
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# name -> (title, argv after the python executable). "{device}" is filled in per run.
BENCHMARKS = {
    "losses": ("AMCL loss: batched heads vs per-head loop vs reference formulation",
               ["benchmarks/losses.py", "--device", "{device}"]),
    "loader-cifar": ("Two-view loader vs torchvision DataLoader + PIL, 32x32",
                     ["benchmarks/loader.py", "--size", "cifar"]),
    "loader-imagenet": ("Two-view loader vs torchvision ImageFolder + PIL, ImageNet-size JPEGs",
                        ["benchmarks/loader.py", "--size", "imagenet"]),
    "train-step": ("Full training step: this project vs a re-creation of the reference step",
                   ["benchmarks/train_step.py", "--device", "{device}"]),
    "scaling": ("Training-step scaling with heads C and batch size",
                ["benchmarks/scaling.py", "--device", "{device}"]),
}
CPU_ONLY = {"loader-cifar", "loader-imagenet"}  # the loaders run on the host CPU either way
# Runs measured on a lent GPU machine and saved with --json: re-printed from the saved file, naming that machine.
SAVED = {
    "losses-h100": ("AMCL loss: batched heads vs per-head loop vs reference formulation",
                    ["benchmarks/losses.py", "--from-json", "benchmarks/results/losses_cuda_h100.json"],
                    "python benchmarks/losses.py --device cuda --repeats 30 --json losses_cuda.json",
                    "NVIDIA H100 80GB HBM3 (torch 2.11.0+cu130)"),
}

MARK = re.compile(r"<!-- section: (?P<key>[\w.-]+) -->\n.*?<!-- end: (?P=key) -->\n", re.S)
HEADER = """# Benchmarks

Every table below was printed by the command above it, on the machine it names, and copied here by
`python benchmarks/report.py` (GPU sections: `python benchmarks/report.py --device cuda` on a GPU machine).
Nothing here is typed by hand; to refresh a table, run its command again through report.py.

"""


def run_one(name: str, device: str, timeout: float) -> str:
    from ffcv_amcl import machine

    if name in SAVED:
        title, argv, measured_with, where = SAVED[name]
        device = "cuda"
    else:
        title, argv = BENCHMARKS[name]
        argv = [a.format(device=device) for a in argv]
        where = measured_with = None
    cmd = [sys.executable, *argv]
    shown = "python " + " ".join(shlex.quote(a) for a in argv)
    if measured_with:
        shown = f"{measured_with}` on the GPU machine; re-printed with `{shown}"
    started = time.time()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    took = time.time() - started
    out = proc.stdout.strip()
    if proc.returncode != 0:
        err = proc.stderr.strip().splitlines()[-15:]
        out += "\n\n[failed with exit code %d]\n%s" % (proc.returncode, "\n".join(err))
    where = where or machine.one_line(machine.describe(device))
    key = f"{name}.{device.split(':')[0]}"
    return (f"<!-- section: {key} -->\n## {title} ({device.split(':')[0].upper()})\n\n"
            f"Command: `{shown}`  \nMachine: {where}  \nMeasured: {time.strftime('%Y-%m-%d')}, "
            f"{took:.0f} s\n\n```\n{out}\n```\n\n<!-- end: {key} -->\n")


def merge(path: Path, sections: list[str]) -> None:
    text = path.read_text() if path.exists() else HEADER
    for sec in sections:
        key = MARK.match(sec).group("key")
        pattern = re.compile(rf"<!-- section: {re.escape(key)} -->\n.*?<!-- end: {re.escape(key)} -->\n", re.S)
        if pattern.search(text):
            text = pattern.sub(lambda _: sec, text)
        else:
            text = text.rstrip("\n") + "\n\n" + sec
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS) + sorted(SAVED), help="run just these")
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--timeout", type=float, default=900, help="seconds per benchmark")
    args = ap.parse_args()
    names = args.only or list(BENCHMARKS)
    if args.device != "cpu":
        names = [n for n in names if n not in CPU_ONLY] if not args.only else names
    sections = []
    for name in names:
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
