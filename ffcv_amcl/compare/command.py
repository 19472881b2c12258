"""The compare command: a plan's runs trained (skipping what is finished, resuming what stopped, retrying what
failed), then one table with paired differences and verdicts, and its figures.

    python -m ffcv_amcl.compare PLAN.yaml --out DIR [--seeds 0,1] [--only NAME,...] [--parallel N] [--dry-run]
    python -m ffcv_amcl.compare [PLAN.yaml] --out DIR --report     # the table again from DIR, no training

Exit status: 0 when every selected run finished, 1 when a run failed (the table is written all the same; the next
invocation retries it), 2 for a bad plan or flag (nothing started), 130 after SIGINT and 143 after SIGTERM (every
run saved a checkpoint; the same command continues).
"""
from __future__ import annotations

import contextlib
import dataclasses
import shlex
import shutil
import sys
import time
from pathlib import Path

from ffcv_amcl.compare import figures, table
from ffcv_amcl.compare.attempt import FAILED, run_state
from ffcv_amcl.compare.expand import expand
from ffcv_amcl.compare.launch import Slot, command, cuda_count, make_slots, usable_core_ids, uses_cuda
from ffcv_amcl.compare.plan import read_plan
from ffcv_amcl.compare.results import run_result
from ffcv_amcl.compare.submit import CLUSTERS, SubmititOptions
from ffcv_amcl.errors import ArgumentParser, UserError, check, cli, user_io

PLAN_COPY = "plan.yaml"


def parse_args(argv):
    ap = ArgumentParser(prog="python -m ffcv_amcl.compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("plan", nargs="?", default="", help="the plan (YAML); with --report, DIR's copy by default")
    ap.add_argument("--out", required=True, help="folder of the runs and the table (created)")
    ap.add_argument("--seeds", default="", help="comma-separated seeds instead of the plan's")
    ap.add_argument("--only", default="", help="comma-separated dataset, variant or grid-point names to run")
    ap.add_argument("--parallel", type=int, default=None,
                    help="runs at once (default 1 here; with --executor submitit, every run at once)")
    ap.add_argument("--gpus-per-run", type=int, default=1, help="GPUs per run (> 1: the run goes under torchrun)")
    ap.add_argument("--report", action="store_true", help="write and print the table from DIR, train nothing")
    ap.add_argument("--dry-run", action="store_true", help="print the runs, their state and commands; start none")
    ap.add_argument("--executor", choices=("local", "submitit"), default="local",
                    help="local: this machine; submitit: one job per run (Slurm, or --submitit-cluster local)")
    ap.add_argument("--submitit-cluster", choices=CLUSTERS, default="slurm", help="submitit's cluster")
    ap.add_argument("--slurm-partition", default="", help="Slurm partition")
    ap.add_argument("--slurm-time", type=int, default=60, help="minutes per job (a timed-out job is requeued)")
    ap.add_argument("--slurm-gpus-per-node", type=int, default=None, help="GPUs per job (default --gpus-per-run "
                                                                         "for runs on CUDA, else 0)")
    ap.add_argument("--slurm-cpus-per-task", type=int, default=None, help="CPU cores per job")
    ap.add_argument("--slurm-mem-gb", type=float, default=None, help="memory per job, GB")
    ap.add_argument("--slurm-account", default="", help="Slurm account")
    ap.add_argument("--slurm-qos", default="", help="Slurm QOS")
    ap.add_argument("--slurm-constraint", default="", help="Slurm constraint")
    a = ap.parse_args(argv)
    check(a.parallel is None or a.parallel >= 1, f"--parallel {a.parallel}: give 1 or more")
    check(a.gpus_per_run >= 1, f"--gpus-per-run {a.gpus_per_run}: give 1 or more")
    return a


def int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        values = []
    check(bool(values) and min(values) >= 0, f"{flag} {text}: give comma-separated integers >= 0, e.g. 0,1,2")
    return list(dict.fromkeys(values))


def load_plan(a, out: Path):
    path = a.plan or str(out / PLAN_COPY)
    check(bool(a.plan) or (out / PLAN_COPY).is_file(), f"--report without a plan reads {out / PLAN_COPY}, which is "
                                                       f"not there: give the plan, or --out a comparison's folder")
    plan = read_plan(path)
    if not a.plan:                 # DIR's copy: name the plan as the runs' table did
        import json
        saved = out / table.JSON_FILE
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            plan.path = str(json.loads(saved.read_text())["plan"])
    if a.seeds:
        plan.seeds = int_list(a.seeds, "--seeds")
    return plan


def seeds_on_disk(out: Path) -> set[int]:
    """Seeds of the run folders a comparison's folder holds (earlier invocations with other --seeds)."""
    found = set()
    for p in out.glob("*/*/seed*/outcome.json"):
        tail = p.parent.name[len("seed"):]
        if tail.isdigit():
            found.add(int(tail))
    return found


def table_runs(plan, out: Path, world_size: int) -> list:
    """Every run the table covers: all datasets and variants of the plan, its seeds and those DIR holds."""
    seeds = list(dict.fromkeys([*plan.seeds, *sorted(seeds_on_disk(out))]))
    return expand(dataclasses.replace(plan, seeds=seeds), out, world_size=world_size, check_files=False)


def machine_line(a, slots: list[Slot]) -> str:
    from ffcv_amcl import machine

    if a.executor == "submitit":
        return f"submitit {a.submitit_cluster} jobs" + (f" (partition {a.slurm_partition})" if a.slurm_partition
                                                         else "")
    info = machine.describe("cuda" if any(s.gpus for s in slots) else "cpu")
    info["torch_threads"] = slots[0].threads            # each run's, not this process's
    return machine.one_line(info) + f" per run, {len(slots)} run(s) at once"


def report(plan, out: Path, a, argv, slots) -> dict:
    """Gather every run of the plan from DIR, write table.md, results.csv, results.json and the figures."""
    specs = table_runs(plan, out, a.gpus_per_run)
    meta = {"command": shlex.join(["python", "-m", "ffcv_amcl.compare", *argv]),
            "plan_command": shlex.join(["python", "-m", "ffcv_amcl.compare", plan.path, "--out", a.out]
                                       + (["--seeds", a.seeds] if a.seeds else [])),
            "machine": machine_line(a, slots), "device": "cuda" if any(s.gpus for s in slots) else "cpu",
            "date": time.strftime("%Y-%m-%d")}
    results = table.build(plan, specs, [run_result(s, plan.metric) for s in specs], meta)
    text = table.write_tables(out, results)
    written = figures.write_figures(results, out)
    print(text, end="", flush=True)
    print(f"wrote {out / table.TABLE_FILE}, {table.CSV_FILE}, {table.JSON_FILE}"
          + "".join(f", {p.name}" for p in written), flush=True)
    return results


def placement(a, specs: list):
    """(slots, nproc_of, slot_of): how the runs share this machine, processes per run, a submitit job's slot."""
    gpus_here = cuda_count() if a.executor == "local" else 0
    on_cuda = [s for s in specs if uses_cuda(s.flat, gpus_here)] if a.executor == "local" else \
        [s for s in specs if s.flat.get("training.device") != "cpu"]
    cpu_runs = [s for s in specs if s not in on_cuda]
    check(a.gpus_per_run == 1 or not cpu_runs, f"--gpus-per-run {a.gpus_per_run} needs runs on CUDA and "
                                               f"{cpu_runs[0].label if cpu_runs else ''} trains on the CPU")
    parallel = a.parallel or 1
    slots = make_slots(parallel, gpus_per_run=a.gpus_per_run, cuda=bool(on_cuda) and a.executor == "local",
                       gpus_here=gpus_here)
    cuda_labels = {s.label for s in on_cuda}

    def nproc_of(spec) -> int:
        return a.gpus_per_run if spec.label in cuda_labels else 1

    threads = a.slurm_cpus_per_task or (max(1, len(usable_core_ids()) // parallel)
                                        if a.submitit_cluster == "local" else 0)

    def slot_of(spec) -> Slot:
        return Slot(None, max(1, threads // nproc_of(spec)) if threads else 0, None)

    return slots, nproc_of, slot_of


def dry_run(specs: list, slots, nproc_of, slot_of, a) -> None:
    states = [run_state(s) for s in specs]
    for spec, state in zip(specs, states):
        slot = slot_of(spec) if a.executor == "submitit" else slots[0]
        shown = "skip (finished)" if state == "finished" else state
        print(f"{spec.label}: {shown}\n  {shlex.join(command(spec.argv, slot, nproc=nproc_of(spec)))}")
    counts = {s: states.count(s) for s in dict.fromkeys(states)}
    print(f"{len(specs)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + "; nothing started (--dry-run)")


def execute(specs: list, out: Path, a, slots, nproc_of, slot_of) -> tuple[dict, int | None]:
    from ffcv_amcl.compare.local import run_local
    from ffcv_amcl.compare.progress import Progress
    from ffcv_amcl.compare.submit import run_submitit

    todo = [s for s in specs if run_state(s) != "finished"]
    if len(todo) < len(specs):
        print(f"compare: {len(specs) - len(todo)} of {len(specs)} runs already finished (skipped)", flush=True)
    progress = Progress(len(todo), describe=lambda spec: describe_run(spec, a.metric_name))
    try:
        if a.executor == "submitit":
            options = SubmititOptions(a.submitit_cluster, a.slurm_partition, a.slurm_time, a.slurm_gpus_per_node,
                                      a.slurm_cpus_per_task, a.slurm_mem_gb, a.slurm_account, a.slurm_qos,
                                      a.slurm_constraint)
            return run_submitit(todo, progress, out=out, options=options, parallel=a.parallel, slot_of=slot_of,
                                nproc_of=nproc_of, cwd=str(Path.cwd()))
        return run_local(todo, slots, progress, nproc_of=nproc_of, cwd=str(Path.cwd()))
    finally:
        progress.close()


def describe_run(spec, metric: str) -> str:
    r = run_result(spec, metric)
    value = "n/a" if r.value is None else f"{r.value:.2f}"
    return f"{metric} {value} in {r.minutes or 0:.1f} min" + (" (collapsed)" if r.collapsed else "")


def prepare_out(out: Path, plan_path: str):
    """Create and lock DIR (one comparison at a time) and keep a copy of the plan there; returns the lock."""
    from ffcv_amcl.run_folder import lock_folder

    with user_io(out, "creating"):
        out.mkdir(parents=True, exist_ok=True)
    lock = lock_folder(out, setting="out", user="comparison")
    if Path(plan_path).resolve() != (out / PLAN_COPY).resolve():
        from ffcv_amcl.atomic import atomic_path
        with atomic_path(out / PLAN_COPY) as tmp:
            shutil.copyfile(plan_path, tmp)
    return lock


@cli
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = parse_args(argv)
    out = Path(a.out).absolute()
    check(not out.is_file(), f"--out {out} is a file: give a folder for the runs and the table")
    plan = load_plan(a, out)
    a.metric_name = plan.metric
    only = [n for n in a.only.split(",") if n.strip()]
    specs = expand(plan, out, only=only, world_size=a.gpus_per_run, check_files=not a.report)
    slots, nproc_of, slot_of = placement(a, specs)
    if a.dry_run:
        dry_run(specs, slots, nproc_of, slot_of, a)
        return 0
    if a.report:                   # no lock: the table may be written while the runs go on
        check(out.is_dir(), f"--report: {out} holds no comparison: give the --out of one")
        report(plan, out, a, argv, slots)
        return 0
    lock = prepare_out(out, plan.path)
    try:
        outcomes, signal_exit = execute(specs, out, a, slots, nproc_of, slot_of)
        report(plan, out, a, argv, slots)
    finally:
        lock.close()
    if signal_exit:
        print("compare: stopped; every run saved where it was: run the same command again to continue",
              file=sys.stderr, flush=True)
        return signal_exit
    failed = [label for label, o in outcomes.items() if o["status"] == FAILED]
    if failed:
        print(f"compare: {len(failed)} run(s) failed ({', '.join(failed[:3])}{', ...' if len(failed) > 3 else ''}): "
              f"run the same command again to retry them", file=sys.stderr, flush=True)
    return 1 if failed else 0
