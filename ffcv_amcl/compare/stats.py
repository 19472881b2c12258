"""The statistics of a comparison: mean and sample standard deviation over seeds, and the paired difference of two
variants over the seeds they share, with its 95% interval (Student t) and a verdict.

Pairing is fair because a seed fixes the data order and every augmented view: two variants run with one seed (and
the same data settings) see the same images in the same order, so the difference of their results seed by seed
removes the luck they share, and the spread of those differences is what a verdict must beat.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

CONFIDENCE = 0.95
BETTER, WORSE, NOISE, ONE_SEED = "better", "worse", "inside the noise", "one seed: no test"


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """(mean, sample std) of `values`; std None for fewer than two values, both None for none."""
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def t_quantile(df: int, confidence: float = CONFIDENCE) -> float:
    """Two-sided Student t critical value for `df` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.5 + confidence / 2, df))


@dataclass
class Paired:
    """A variant minus its baseline over their shared seeds."""

    seeds: list[int]
    mean: float
    std: float | None
    low: float | None              # the 95% interval of the mean difference (None with one seed)
    high: float | None
    verdict: str


def paired_difference(values: dict[int, float], baseline: dict[int, float], *,
                      higher_is_better: bool = True) -> Paired | None:
    """values[s] - baseline[s] over the seeds s both have; None when they share none. The verdict: better or
    worse when the 95% interval excludes 0, inside the noise when it holds 0, one seed: no test below two seeds."""
    seeds = sorted(set(values) & set(baseline))
    if not seeds:
        return None
    diffs = [values[s] - baseline[s] for s in seeds]
    mean, std = mean_std(diffs)
    if len(diffs) < 2:
        return Paired(seeds, mean, None, None, None, ONE_SEED)
    half = t_quantile(len(diffs) - 1) * std / math.sqrt(len(diffs))
    low, high = mean - half, mean + half
    if low <= 0 <= high:
        verdict = NOISE
    else:
        verdict = BETTER if (mean > 0) == higher_is_better else WORSE
    return Paired(seeds, mean, std, low, high, verdict)
