"""Separation of positive and negative pairs against numpy on fixed projections: the overlap coefficient of the two
similarity histograms (50 bins on [-1, 1], each normalised to sum 1) and the share of positives below 0.5."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ffcv_amcl.monitoring.separation import SeparationMonitor


def projections(seed: int, heads=2, batch=40, dim=8) -> torch.Tensor:
    """(C, 2B, D): views b near views a in head 0 (well separated), unrelated in head 1 (overlapping)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(heads, batch, dim, generator=g)
    noise = torch.randn(heads, batch, dim, generator=g)
    b = torch.stack([a[0] + 0.3 * noise[0], noise[1]] + [a[c] + noise[c] for c in range(2, heads)])
    return torch.cat([a, b], dim=1)


def reference(batches: list[torch.Tensor]) -> dict:
    """Written from the definition in float64: positives (a_i, b_i), negatives (a_i, b_j), j != i."""
    pos, neg = [], []
    for z in batches:
        z = z.double().numpy()
        z = z / np.linalg.norm(z, axis=-1, keepdims=True)
        B = z.shape[1] // 2
        for c in range(z.shape[0]):
            sim = z[c, :B] @ z[c, B:].T
            pos.append((c, np.diag(sim)))
            neg.append((c, sim[~np.eye(B, dtype=bool)]))
    out = {}
    for c in range(batches[0].shape[0]):
        p = np.concatenate([s for h, s in pos if h == c])
        n = np.concatenate([s for h, s in neg if h == c])
        hp, _ = np.histogram(p, bins=50, range=(-1, 1))
        hn, _ = np.histogram(n, bins=50, range=(-1, 1))
        out[f"pos_neg_overlap_head{c}"] = np.minimum(hp / hp.sum(), hn / hn.sum()).sum()
        out[f"pos_below_half_head{c}"] = np.mean(p < 0.5)
    return out


def feed(monitor, batches):
    for z in batches:
        monitor.add(SimpleNamespace(projections=z))     # what the monitor reads of a StepOutput


def test_overlap_and_positives_below_half_match_numpy():
    batches = [projections(0), projections(1)]
    monitor = SeparationMonitor.for_model(None)
    feed(monitor, batches)
    fields, warnings = monitor.finish(lambda x: x)
    expected = reference(batches)
    assert warnings == [] and fields.keys() == expected.keys()
    for key, value in expected.items():
        assert fields[key] == pytest.approx(value, abs=2e-3), key     # a value on a bin edge may fall either way
    assert fields["pos_neg_overlap_head0"] < 0.2 < 0.5 < fields["pos_neg_overlap_head1"]   # apart; mixed


def test_mid_epoch_state_and_sum_over_processes():
    batches = [projections(2), projections(3)]
    whole = SeparationMonitor.for_model(None)
    feed(whole, batches)
    first, second = SeparationMonitor.for_model(None), SeparationMonitor.for_model(None)
    feed(first, batches[:1])
    second.load(first.state(lambda x: x))            # a checkpoint taken after the first batch
    feed(second, batches[1:])
    assert second.finish(lambda x: x) == whole.finish(lambda x: x)
    doubled = whole.finish(lambda x: 2 * x)[0]       # as if two processes had seen the same batches
    assert doubled == pytest.approx(whole.finish(lambda x: x)[0])


def test_steps_without_projections_leave_no_fields():
    monitor = SeparationMonitor.for_model(None)
    feed(monitor, [None])
    assert monitor.finish(lambda x: x) == ({}, [])


@pytest.mark.gpu
def test_no_host_sync_per_step_on_cuda():
    monitor = SeparationMonitor.for_model(None)
    z = projections(4).cuda()
    torch.cuda.set_sync_debug_mode("error")
    try:
        feed(monitor, [z, z])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert monitor.finish(lambda x: x)[0]["pos_neg_overlap_head0"] < 0.2
