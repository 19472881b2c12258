"""Paired differences against scipy's paired t-test: the 95% interval, and the verdict its p-value implies."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from ffcv_amcl.compare.stats import mean_std, paired_difference


@pytest.mark.parametrize("seed", range(6))
def test_interval_and_verdict_match_scipy(seed):
    g = np.random.default_rng(seed)
    n = int(g.integers(2, 7))
    base = g.normal(75, 1, n)
    other = base + g.normal([-2, -0.3, 0, 0.3, 2, 5][seed], 0.8, n)
    p = paired_difference(dict(enumerate(other)), dict(enumerate(base)))
    test = stats.ttest_rel(other, base)
    assert (p.low, p.high) == pytest.approx(tuple(test.confidence_interval(0.95)), rel=1e-9)
    expected = "inside the noise" if test.pvalue >= 0.05 else ("better" if p.mean > 0 else "worse")
    assert p.verdict == expected
    lower = paired_difference(dict(enumerate(other)), dict(enumerate(base)), higher_is_better=False)
    assert lower.verdict == {"better": "worse", "worse": "better"}.get(expected, expected)


def test_only_shared_seeds_are_paired():
    p = paired_difference({0: 1.0, 1: 2.0, 5: 9.0}, {0: 0.5, 1: 1.0, 2: 7.0})
    assert p.seeds == [0, 1] and p.mean == pytest.approx(0.75)
    one = paired_difference({0: 1.0, 3: 2.0}, {0: 0.0})
    assert one.verdict == "one seed: no test" and one.low is None and one.std is None
    assert paired_difference({0: 1.0}, {1: 1.0}) is None


def test_mean_and_sample_std():
    assert mean_std([1.0, 2.0, 4.0]) == pytest.approx((7 / 3, np.std([1, 2, 4], ddof=1)))
    assert mean_std([3.0]) == (3.0, None) and mean_std([]) == (None, None)
