"""AMCL SimCLR-form loss, forward + backward, three formulations of the same function side by side in one run:

  batched  ffcv_amcl.losses.amcl.AMCLContrastive: all C heads in one einsum (one 2-D gemm per head on a CPU
           whose threads the heads do not divide: ffcv_amcl.losses.pairs), phi once per view, one top-k.
  loop     the same efficient math, one head at a time in a Python loop (2-D matmuls).
  ref      the reference implementation's formulation (benchmarks.common.ReferenceAMCL): a loop over heads and
           both directions that expands the negatives to B x (2B-2) x D and runs phi on every anchor-negative pair
           (ref form only).

Each AMCL form in --forms (default: ref and the default hetero) is measured; batched and loop share the form's
per-anchor terms (ffcv_amcl.losses.amcl.forms). All three compute the same loss (checked here). Peak memory of one forward + backward above what was live before
it: on CUDA torch.cuda.max_memory_allocated; on the CPU the peak of the allocator's running total recorded by
torch.profiler(profile_memory=True) (tracemalloc does not see torch's allocations, and RSS keeps freed pages).

    python -m benchmarks.losses --device cpu [--repeats 5] [--heads 1 3 8] [--forms ref hetero] [--json out.json]
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.common import ProcessClock, ReferenceAMCL
from ffcv_amcl import machine
from ffcv_amcl.atomic import atomic_path
from ffcv_amcl.errors import UserError, cli
from ffcv_amcl.losses.amcl import FORMS, AMCLContrastive
from ffcv_amcl.losses.amcl.candidates import hardest, pick
from ffcv_amcl.losses.temperature import pair_tau
from ffcv_amcl.profile import Clock


# ---- the two comparison formulations ---------------------------------------------------------------------------

def batched_loss(m: AMCLContrastive, za: torch.Tensor, zb: torch.Tensor) -> torch.Tensor:
    return m(za, zb)


def loop_loss(m: AMCLContrastive, za: torch.Tensor, zb: torch.Tensor) -> torch.Tensor:
    """The batched math, one head at a time."""
    C, B, _ = za.shape
    n = 2 * B
    k = min(m.topk, n - 2)
    total = za.new_zeros(())
    for c in range(C):
        z = F.normalize(torch.cat([za[c], zb[c]]), dim=-1)
        p = m.phi(m.phi_input(z))
        s_neg, idx = hardest(z @ z.T, k)
        a_neg = pick(p @ p.T, idx)
        s_pos, a_pos = (z * z.roll(B, 0)).sum(-1), (p * p.roll(B, 0)).sum(-1)
        tau_p, tau_n = pair_tau(a_pos, m.tau_min, m.tau_max), pair_tau(a_neg, m.tau_min, m.tau_max)
        total = total + m.FORMS[m.form].terms(s_pos, tau_p, s_neg, tau_n, m.settings).mean()
    return total


def reference_loss(m: AMCLContrastive, za: torch.Tensor, zb: torch.Tensor) -> torch.Tensor:
    """The reference formulation with m's phi and constants (benchmarks.common.ReferenceAMCL)."""
    return ReferenceAMCL(m)(za, zb)


# ---- measurement -----------------------------------------------------------------------------------------------

def cpu_peak_bytes(run) -> int:
    """Peak of the CPU allocator's running total while run() executes, from torch.profiler's memory events."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    totals = [e["args"]["Total Allocated"] for e in events
              if e.get("name") == "[memory]" and e.get("args", {}).get("Device Type") == 0]
    return max([0, *totals])


def step(fn, m, za, zb, device):
    za.grad = zb.grad = None
    m.zero_grad(set_to_none=True)
    loss = fn(m, za, zb)
    loss.backward()
    if device == "cuda":
        torch.cuda.synchronize()
    return loss.detach()


def peak_memory(fn, m, za, zb, device):
    if device == "cuda":
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step(fn, m, za, zb, device)
        return torch.cuda.max_memory_allocated() - before
    za.grad = zb.grad = None                 # freed before profiling: the total starts at the live set
    m.zero_grad(set_to_none=True)
    return cpu_peak_bytes(lambda: step(fn, m, za, zb, device))


def measure(fns, m, za, zb, device, repeats, warmup, clock):
    """Time the formulations interleaved (one run of each per round), so load from other processes hits all alike;
    `clock` has start() and stop() -> seconds (profile.Clock or common.ProcessClock).

    Returns per formulation: best-of-repeats ms (the least disturbed by other load), peak bytes, loss value and
    input gradients."""
    for _ in range(warmup):
        for fn in fns:
            step(fn, m, za, zb, device)
    times = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            clock.start()
            step(fn, m, za, zb, device)
            times[i].append(clock.stop() * 1e3)
    out = []
    for i, fn in enumerate(fns):
        mem = peak_memory(fn, m, za, zb, device)
        value = step(fn, m, za, zb, device)
        out.append((min(times[i]), mem, value, [za.grad.clone(), zb.grad.clone()]))
    return out


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


HEADER = (f"{'form':<6} {'C':>2} {'batched ms':>11} {'loop ms':>9} {'ref ms':>10} {'batched MiB':>12} {'loop MiB':>9} "
          f"{'ref MiB':>9} {'vs loop':>8} {'vs ref':>8} {'max rel diff':>13}")


def print_row(row: dict) -> None:
    """One table row; NaN/None (reference skipped) prints as '-'."""
    def val(key):
        v = row.get(key)
        return float("nan") if v is None else float(v)

    tb, tl, tr = val("batched_ms"), val("loop_ms"), val("ref_ms")
    na = lambda v, spec: "-" if math.isnan(v) else format(v, spec)  # noqa: E731
    ref_label = ("" if row.get("form", "ref") != "ref" else "  (ref skipped: --ref-heads)" if math.isnan(tr) else
                 "" if row["ref_batch"] == row["batch"] else f"  (ref at B={row['ref_batch']})")
    vs_ref = "-" if math.isnan(tr) else f"{tr / tb:.1f}x"
    print(f"{row.get('form', 'ref'):<6} {row['heads']:>2} {tb:>11.1f} {tl:>9.1f} {na(tr, '.1f'):>10} {val('batched_mib'):>12.1f} "
          f"{val('loop_mib'):>9.1f} {na(val('ref_mib'), '.1f'):>9} {tl / tb:>7.2f}x {vs_ref:>8} "
          f"{val('max_rel_diff'):>13.1e}{ref_label}", flush=True)


def print_saved(path: Path) -> int:
    """Re-print the table of a run saved with --json (e.g. measured on a GPU machine)."""
    try:
        rows = json.loads(path.read_text())
        first = rows[0]
    except (OSError, ValueError, IndexError, KeyError, TypeError):
        raise UserError(f"--from-json {path}: not a results file written by this script's --json")
    where = first.get("machine", first["device"])
    print(f"# AMCL SimCLR loss, forward+backward, B={first['batch']} D={first['dim']}, float32, {where} "
          f"({first['clock']} clock), re-printed from {path.name}")
    print("# speedup = time(other) / time(batched): >1 means batched is faster")
    print(HEADER)
    for row in rows:
        print_row(row)
    return 0


@cli
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.losses", description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--heads", type=int, nargs="+", default=[1, 3, 8])
    ap.add_argument("--topk", type=int, default=100)
    ap.add_argument("--forms", nargs="+", choices=FORMS, default=["ref", "hetero"],
                    help="AMCL forms to measure (the reference formulation runs for ref only)")
    ap.add_argument("--repeats", type=int, default=10, help="timed runs of batched and loop (best of)")
    ap.add_argument("--ref-repeats", type=int, default=1, help="timed runs of the reference formulation")
    ap.add_argument("--ref-batch", type=int, default=None,
                    help="batch size for the reference formulation (default: --batch); a smaller one is labelled")
    ap.add_argument("--ref-heads", type=int, nargs="*", default=[1, 3],
                    help="on the CPU, run the reference formulation only for these C (it needs ~2 GiB per head "
                         "at B=512); on CUDA it always runs")
    ap.add_argument("--clock", choices=["wall", "process"], default="wall",
                    help="wall: elapsed time; process: this process's CPU time (CPU only; with --threads 1 it is "
                         "the compute time even when other jobs share the cores)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    ap.add_argument("--from-json", type=Path, default=None, help="only re-print the table of a saved --json run")
    args = ap.parse_args(argv)
    if args.from_json:
        return print_saved(args.from_json)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible; run with --device cpu or on a GPU machine")
    if args.batch < 2 or args.dim < 1 or args.topk < 1 or args.repeats < 1 or min(args.heads) < 1:
        raise UserError("--batch >= 2, --dim, --topk, --repeats and --heads must be positive")
    if args.clock == "process" and args.device == "cuda":
        raise UserError("--clock process measures CPU time; use --clock wall with --device cuda")
    if args.threads:
        torch.set_num_threads(args.threads)
    machine.keep_freed_memory()                     # the trainer's allocator setting, for every formulation
    clock = ProcessClock() if args.clock == "process" else Clock(torch.device(args.device))
    ref_batch = args.ref_batch or args.batch
    device = args.device
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        name = torch.cuda.get_device_name()
        mem_note = "peak = torch.cuda.max_memory_allocated above the pre-call level"
    else:
        name = f"CPU, {torch.get_num_threads()} torch threads"
        mem_note = "peak = torch.profiler CPU allocator total (profile_memory) above the pre-call level"
    print(f"# AMCL SimCLR loss, forward+backward, B={args.batch} D={args.dim} topk={args.topk}, float32, {name}")
    print(f"# ms ({args.clock} clock): best of {args.repeats} interleaved runs (batched, loop), "
          f"of {args.ref_repeats} (ref, B={ref_batch}); "
          f"{mem_note}")
    print(f"# speedup = time(other) / time(batched): >1 means batched is faster")
    print(HEADER)
    rows = []
    for form, C in itertools.product(args.forms, args.heads):
        torch.manual_seed(C)
        m = AMCLContrastive(args.dim, C, topk=args.topk, form=form, validate=False).to(device)
        za = torch.randn(C, args.batch, args.dim, device=device, requires_grad=True)
        zb = torch.randn(C, args.batch, args.dim, device=device, requires_grad=True)
        (tb, mb, vb, gb), (tl, ml, vl, gl) = measure([batched_loss, loop_loss], m, za, zb, device, args.repeats, 1,
                                                      clock)
        run_ref = form == "ref" and (C in args.ref_heads or device == "cuda")
        ra, rb = za, zb
        if ref_batch != args.batch:
            ra = za.detach()[:, :ref_batch].clone().requires_grad_()
            rb = zb.detach()[:, :ref_batch].clone().requires_grad_()
        if run_ref:
            (tr, mr, vr, gr), = measure([reference_loss], m, ra, rb, device, args.ref_repeats,
                                        1 if device == "cuda" else 0, clock)
        else:
            tr = mr = float("nan")
        diff = max(rel(vl, vb), *(rel(a, b) for a, b in zip(gl, gb)))
        if run_ref and ref_batch == args.batch:
            diff = max(diff, rel(vr, vb), *(rel(a, b) for a, b in zip(gr, gb)))
        row = dict(form=form, heads=C, batch=args.batch, ref_batch=ref_batch, dim=args.dim, device=device, machine=name,
                   clock=args.clock,
                   batched_ms=tb, loop_ms=tl, ref_ms=tr, batched_mib=mb / 2**20, loop_mib=ml / 2**20,
                   ref_mib=mr / 2**20, speedup_vs_loop=tl / tb, speedup_vs_ref=tr / tb, max_rel_diff=diff)
        rows.append(row)
        print_row(row)
        del m, za, zb, ra, rb
    if args.json:
        with atomic_path(args.json) as tmp:
            clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows]
            tmp.write_text(json.dumps(clean, indent=2))
    return 0


if __name__ == "__main__":
    main()
