"""The comparison table: per dataset and variant the metric's mean +- sample std over seeds, n, minutes per run,
images/s, pair separation, AMCL's final temperature health and the collapse flags; every variant against its
baseline (the same dataset and grid point) as a paired difference over shared seeds with its 95% interval and a
verdict. Written as table.md, results.csv and results.json (everything the table and the figures are drawn from).

    python -m ffcv_amcl.compare.table RESULTS.json        # print the table of a saved results.json
"""
from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import asdict
from pathlib import Path

from ffcv_amcl.atomic import atomic_path
from ffcv_amcl.compare.results import NOT_RUN, RunResult
from ffcv_amcl.compare.stats import mean_std, paired_difference
from ffcv_amcl.errors import ArgumentParser, check, cli
from ffcv_amcl.monitoring.names import higher_is_better

TABLE_FILE, CSV_FILE, JSON_FILE = "table.md", "results.csv", "results.json"
FOOTNOTE = (
    "Pairing by seed is fair: a seed fixes the data order and every augmented view, so two variants run with one "
    "seed (and the same data settings) see the same images in the same order; the difference seed by seed removes "
    "the luck they share. Difference: the variant minus its baseline over their shared seeds, mean and 95% interval "
    "(Student t, n - 1 degrees of freedom); `better`/`worse` when the interval excludes 0, `inside the noise` when it "
    "holds 0, `one seed: no test` with a single shared seed. std: sample standard deviation over seeds. overlap: "
    "the final epoch's overlap of the positive and negative pair-similarity histograms, mean over heads (0 = apart, "
    "1 = the same). Temperatures (AMCL): the final epoch's tau+ median [10th, 90th percentile], mean over heads and "
    "seeds, and the worst head's share of tau+ at a bound. `collapsed`: the last kNN epoch's RankMe or projection "
    "std signals a collapsed representation (monitoring.collapse).")


def mean_of(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def baseline_key(baseline, method: str) -> str | None:
    return baseline.get(method) if isinstance(baseline, dict) else baseline


def arm_row(runs: list[RunResult], spec) -> dict:
    """One (dataset, arm) row without its comparison: the statistics over its finished seeds."""
    done = [r for r in runs if r.value is not None]
    mean, std = mean_std([r.value for r in done])
    health = {k: mean_of(r.health.get(k) for r in done) for k in ("p10", "p50", "p90")}
    bounds = [r.health["at_bound"] for r in done if r.health.get("at_bound") is not None]
    return {"dataset": spec.dataset, "arm": spec.arm.name, "variant": spec.arm.variant, "point": spec.arm.point,
            "key": spec.arm.key, "method": spec.flat.get("model.method"), "amcl": bool(spec.flat.get("model.amcl")),
            "values": {str(r.seed): r.value for r in done}, "n": len(done), "mean": mean, "std": std,
            "minutes": mean_of(r.minutes for r in done), "images_per_s": mean_of(r.images_per_s for r in done),
            "overlap": mean_of(r.overlap for r in done), "below_half": mean_of(r.below_half for r in done),
            "health": {**health, "at_bound": max(bounds) if bounds else None} if health["p50"] is not None else {},
            "collapsed_seeds": [r.seed for r in done if r.collapsed],
            "failed": [{"seed": r.seed, "status": r.status, "error": r.error} for r in runs
                       if r.value is None and r.status != NOT_RUN]}


def compare_rows(rows: list[dict], baseline, higher: bool) -> None:
    """Add to each row its baseline's name and the paired difference against it (same dataset and point)."""
    for row in rows:
        key = baseline_key(baseline, row["method"])
        base = next((b for b in rows if b["dataset"] == row["dataset"] and b["key"] == key
                     and (row["variant"] is None or b["point"] == row["point"])), None)
        row["baseline"] = base["arm"] if base is not None else None
        row["paired"] = None
        if base is not None and base is not row:
            as_seeds = {int(s): v for s, v in row["values"].items()}
            paired = paired_difference(as_seeds, {int(s): v for s, v in base["values"].items()},
                                       higher_is_better=higher)
            row["paired"] = asdict(paired) if paired else None


def build(plan, specs: list, results: list[RunResult], meta: dict) -> dict:
    """results.json's content: `meta` (command, plan_command, machine, device, date), the plan's metric, the rows
    (with their comparisons) and every run's result."""
    by_arm: dict = {}
    for spec, result in zip(specs, results):
        by_arm.setdefault((spec.dataset, spec.arm.name), (spec, []))[1].append(result)
    rows = [arm_row(runs, spec) for spec, runs in by_arm.values() if any(r.status != NOT_RUN for r in runs)]
    higher = higher_is_better(plan.metric)
    compare_rows(rows, plan.baseline, higher)
    return {"plan": plan.path, **meta, "metric": plan.metric,
            "higher_is_better": higher, "seeds": plan.seeds, "rows": rows, "runs": [asdict(r) for r in results],
            "not_run": sum(r.status == NOT_RUN for r in results)}


# ------------------------------------------------------------------------------------------------- rendering

def num(x, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def health_cell(h: dict) -> str:
    if not h:
        return "-"
    return (f"{num(h['p50'], '.3f')} [{num(h['p10'], '.3f')}, {num(h['p90'], '.3f')}], "
            f"{num(h['at_bound'], '.0%')} at a bound")


def comparison_cells(row: dict) -> tuple[str, str]:
    if row["baseline"] == row["arm"]:
        return "baseline", ""
    p = row.get("paired")
    if p is None:
        return "-", "no shared seed" if row["baseline"] else ""
    interval = f" [{p['low']:+.2f}, {p['high']:+.2f}]" if p["low"] is not None else ""
    return f"{p['mean']:+.2f}{interval} vs {row['baseline']}", p["verdict"]


def group_title(row: dict) -> str:
    return row["dataset"] + (f", {row['point']}" if row["variant"] is not None and row["point"] else "")


def render(results: dict) -> str:
    """table.md: one table per dataset (and grid point), notes on failed and collapsed runs, the footnote."""
    metric = results["metric"]
    lines, groups = [], {}
    for row in results["rows"]:
        groups.setdefault(group_title(row), []).append(row)
    for title, rows in groups.items():
        lines += [f"### {title}", "", f"| variant | {metric} mean ± std | n | min/run | images/s | overlap | "
                  f"temperatures (AMCL) | difference [95% interval] | verdict |", "|" + "---|" * 9]
        for r in rows:
            diff, verdict = comparison_cells(r)
            flag = f" (collapsed: seed {', '.join(map(str, r['collapsed_seeds']))})" if r["collapsed_seeds"] else ""
            label = r["variant"] if r["variant"] is not None else r["arm"]
            lines.append(f"| {label}{flag} | {num(r['mean'])} ± {num(r['std'])} | {r['n']} "
                         f"| {num(r['minutes'], '.1f')} | {num(r['images_per_s'], '.0f')} | {num(r['overlap'])} "
                         f"| {health_cell(r['health'])} | {diff} | {verdict} |")
        lines += [""] + [f"- {r['arm']} seed {f['seed']} {f['status']}: {f['error']}"
                         for r in rows for f in r["failed"]]
        lines += [""] if any(r["failed"] for r in rows) else []
    if results["not_run"]:
        lines += [f"{results['not_run']} planned run(s) have not run yet.", ""]
    lines += [f"Plan: `{results['plan']}`; command: `{results['command']}`; machine: {results['machine']}; "
              f"{results['date']}.", "", FOOTNOTE]
    return "\n".join(lines) + "\n"


def csv_text(results: dict) -> str:
    """results.csv: one line per (dataset, variant) row."""
    fields = ["dataset", "variant", "point", "arm", "method", "amcl", "n", "mean", "std", "minutes", "images_per_s",
              "overlap", "below_half", "tau_pos_p50", "tau_pos_at_bound", "collapsed_seeds", "failed_seeds",
              "baseline", "diff_mean", "diff_low", "diff_high", "diff_seeds", "verdict"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in results["rows"]:
        p = r.get("paired") or {}
        writer.writerow({**{k: r.get(k) for k in fields if k in r}, "tau_pos_p50": r["health"].get("p50"),
                         "tau_pos_at_bound": r["health"].get("at_bound"),
                         "collapsed_seeds": " ".join(map(str, r["collapsed_seeds"])),
                         "failed_seeds": " ".join(str(f["seed"]) for f in r["failed"]), "diff_mean": p.get("mean"),
                         "diff_low": p.get("low"), "diff_high": p.get("high"),
                         "diff_seeds": " ".join(map(str, p.get("seeds", []))), "verdict": p.get("verdict")})
    return buf.getvalue()


def write_tables(out: Path, results: dict) -> str:
    """Write table.md, results.csv and results.json into `out`; returns the table's text."""
    text = render(results)
    for name, content in ((TABLE_FILE, text), (CSV_FILE, csv_text(results)),
                          (JSON_FILE, json.dumps(results, indent=1))):
        with atomic_path(out / name) as tmp:
            tmp.write_text(content)
    return text


@cli
def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m ffcv_amcl.compare.table", description="Print the table of a saved "
                                                                             "results.json (ffcv_amcl.compare).")
    ap.add_argument("results", help="a results.json written by python -m ffcv_amcl.compare")
    a = ap.parse_args(argv)
    path = Path(a.results)
    check(path.is_file(), f"{path} not found: give the results.json of a comparison (OUT/results.json)")
    try:
        results = json.loads(path.read_text())
    except ValueError:
        results = None
    check(isinstance(results, dict) and "rows" in results, f"{path} is not a comparison's results.json")
    print(render(results), end="")
    return 0


if __name__ == "__main__":
    main()
