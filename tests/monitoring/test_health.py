"""Temperature health: histogram quantiles against numpy on the raw values, bound shares counted directly, the
Spearman correlation against scikit-learn's scipy, and the warning line."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from ffcv_amcl.monitoring.health import (BINS, TemperatureHealth, at_bound_warning, bin_edges, record_fields,
                                         spearman)

LO, HI = 0.02, 2.0


def sample(n, seed):
    g = torch.Generator().manual_seed(seed)
    t = torch.exp(torch.empty(2, n).uniform_(np.log(LO), np.log(HI), generator=g))
    t[:, : n // 10] = LO                       # 10% exactly at tau_min in every head
    t[1, n // 10: n // 5] = HI * 0.995          # head 1: another 10% within 1% of tau_max
    return t


def test_quantiles_and_bound_shares_match_the_raw_values():
    health = TemperatureHealth(LO, HI, heads=2)
    steps = [sample(3000, s) for s in range(3)]
    for t in steps:
        health.add({"tau_pos": t, "tau_neg": t.view(2, 300, 10), "s_pos": -t})
    raw = torch.cat(steps, 1).numpy()
    summary = health.summary()
    for c in range(2):
        for kind in ("pos", "neg"):
            row = summary[kind][c]
            for q in (10, 50, 90):
                assert row[f"p{q}"] == pytest.approx(np.percentile(raw[c], q), rel=0.03)
            assert row["at_min"] == pytest.approx(np.mean(raw[c] <= LO * 1.01), abs=1e-9)
            assert row["at_max"] == pytest.approx(np.mean(raw[c] >= HI * 0.99), abs=1e-9)
    assert summary["pos"][1]["at_max"] == pytest.approx(0.1, abs=0.01)
    last = torch.rand(2, 64, generator=torch.Generator().manual_seed(9))           # no ties
    health.add({"tau_pos": last, "s_pos": -last})
    assert health.summary()["rank_corr"] == pytest.approx([-1.0, -1.0], abs=1e-9)  # the last batch's s+ = -tau+


def test_state_round_trip_and_reducer():
    a = TemperatureHealth(LO, HI, heads=2)
    a.add({"tau_pos": sample(500, 0), "s_pos": torch.randn(2, 500)})
    b = TemperatureHealth(LO, HI, heads=2)
    b.load(a.state())
    assert torch.equal(b.counts["pos"], a.counts["pos"]) and b.summary() == a.summary()
    doubled = a.summary(lambda x: 2 * x)                                    # as summing over two processes
    assert doubled["pos"][0]["p50"] == a.summary()["pos"][0]["p50"]
    assert int(a.state(lambda x: 2 * x)["counts_pos"].sum()) == 2 * 2 * 500


def test_spearman_matches_scipy():
    """Spearman's rank correlation, ties (temperatures saturated at a bound) sharing their mean rank."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 200, generator=g), torch.randn(3, 200, generator=g)
    b[1] = a[1] ** 3 + 0.1 * b[1]
    b[2, :80] = 0.02                                                        # tied at tau_min
    got = spearman(a, b)
    for c in range(3):
        assert got[c].item() == pytest.approx(spearmanr(a[c], b[c]).statistic, abs=1e-9)


def test_edges_put_the_one_percent_bands_at_the_ends():
    e = bin_edges(LO, HI)
    assert len(e) == BINS + 1 and e[0] == LO and e[-1] == HI
    assert e[1].item() == pytest.approx(LO * 1.01) and e[-2].item() == pytest.approx(HI * 0.99)
    narrow = bin_edges(0.5, 0.5001)                                         # every value is at a bound
    health = TemperatureHealth(0.5, 0.5001, heads=1)
    health.add({"tau_pos": torch.linspace(0.5, 0.5001, 50).view(1, 50)})
    row = health.summary()["pos"][0]
    assert len(narrow) == BINS + 1 and row["at_min"] + row["at_max"] == pytest.approx(1.0)


def test_record_fields_and_warning():
    health = TemperatureHealth(LO, HI, heads=2)
    stuck = torch.full((2, 100), LO)
    health.add({"tau_pos": stuck, "tau_neg": stuck.view(2, 10, 10), "s_pos": torch.randn(2, 100)})
    summary = health.summary()
    fields = record_fields(summary)
    assert fields["tau_pos_at_min_head1"] == 1.0 and fields["tau_neg_p50_head0"] == pytest.approx(LO, rel=0.01)
    assert fields["rank_corr_s_tau_head0"] is None                          # constant tau: undefined, not NaN
    line = at_bound_warning(summary, LO, HI)
    assert "100% of the positive-pair temperatures sit at a bound (tau_min=0.02)" in line
    assert "--loss.amcl_form" in line and "\n" not in line
    healthy = TemperatureHealth(LO, HI, heads=1)
    healthy.add({"tau_pos": sample(300, 1)[:1]})
    assert at_bound_warning(healthy.summary(), LO, HI) is None
