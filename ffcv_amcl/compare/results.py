"""What a run folder says about its run, for the table: its status, the metric in its final metrics.jsonl record,
its metric over the epochs, minutes, images/s, final temperature health (AMCL), pair separation and collapse flag.
Read through monitoring (read_metrics, names), whoever ran the run (this machine or a submitit job)."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from ffcv_amcl.compare.attempt import FINISHED, read_outcome, run_state
from ffcv_amcl.monitoring.collapse import collapsed
from ffcv_amcl.monitoring.metrics import read_metrics
from ffcv_amcl.monitoring.names import (EPOCH, IMAGES_PER_S, POS_BELOW_HALF, POS_NEG_OVERLAP, RANKME, head_values,
                                        tau_stat)

NOT_RUN = "not run"


@dataclass
class RunResult:
    dataset: str
    arm: str
    variant: str | None
    point: str | None
    seed: int
    status: str                      # finished, failed, stopped, changed, not run
    value: float | None = None       # the plan's metric in the final record
    minutes: float | None = None     # wall time over all attempts
    images_per_s: float | None = None
    curve: list = field(default_factory=list)     # [[epoch, metric], ...]
    health: dict = field(default_factory=dict)    # AMCL: tau_pos p10/p50/p90 (mean over heads), at_bound (worst head)
    overlap: float | None = None     # pos_neg_overlap, mean over heads, final record
    below_half: float | None = None  # pos_below_half, mean over heads, final record
    collapsed: bool = False
    error: str = ""


def finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def head_mean(record: dict, base: str) -> float | None:
    values = [v for v in head_values(record, base).values() if finite(v)]
    return statistics.fmean(values) if values else None


def temperature_health(record: dict) -> dict:
    """The final record's tau+ percentiles (mean over heads) and the worst head's share at a bound; {} when the
    run has no temperature health (AMCL off)."""
    out = {q: head_mean(record, tau_stat("pos", q)) for q in ("p10", "p50", "p90")}
    if out["p50"] is None:
        return {}
    lows, highs = head_values(record, tau_stat("pos", "at_min")), head_values(record, tau_stat("pos", "at_max"))
    shares = [lows[c] + highs[c] for c in lows if finite(lows[c]) and finite(highs.get(c))]
    out["at_bound"] = max(shares) if shares else None
    return out


def run_result(spec, metric: str) -> RunResult:
    """The result of one planned run, from its folder."""
    base = RunResult(spec.dataset, spec.arm.name, spec.arm.variant, spec.arm.point, spec.seed, NOT_RUN)
    outcome = read_outcome(spec.folder)
    if outcome is None:
        return base
    base.status, base.error = outcome.get("status", NOT_RUN), outcome.get("error", "")
    base.minutes = outcome.get("seconds", 0.0) / 60
    if base.status == FINISHED and run_state(spec) == "changed":
        base.status, base.error = "changed", "finished under other settings than the plan's: not counted"
    if base.status != FINISHED:
        return base
    records = read_metrics(spec.folder)
    if not records:
        base.status, base.error = "failed", "finished without a metrics.jsonl record"
        return base
    final = records[-1]
    base.value = final.get(metric) if finite(final.get(metric)) else None
    if base.value is None:
        base.status, base.error = "failed", f"its final record has no value of {metric}"
    base.curve = [[r[EPOCH], r[metric]] for r in records if finite(r.get(metric))]
    speeds = [r[IMAGES_PER_S] for r in records if finite(r.get(IMAGES_PER_S))]
    base.images_per_s = statistics.fmean(speeds) if speeds else None
    base.health = temperature_health(final)
    base.overlap, base.below_half = head_mean(final, POS_NEG_OVERLAP), head_mean(final, POS_BELOW_HALF)
    monitored = next((r for r in reversed(records) if RANKME in r), {})        # the last kNN epoch's record
    base.collapsed = collapsed(monitored, int(spec.flat.get("model.proj_dim") or 1))
    return base
