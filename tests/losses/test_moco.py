"""MoCo InfoNCE with per-head queues (and MoCHi's extra negatives) against the float64 loop reference."""
from __future__ import annotations

import pytest
import torch

from ffcv_amcl.errors import UserError
from ffcv_amcl.losses.moco import info_nce_queue

from . import reference as ref


def leaf(gen, *shape):
    return torch.randn(*shape, generator=gen, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("heads", [1, 2, 3, 8])
@pytest.mark.parametrize("with_extra", [False, True])
def test_matches_reference(heads, with_extra):
    gen = torch.Generator().manual_seed(heads)
    q, k, queue = leaf(gen, heads, 4, 6), leaf(gen, heads, 4, 6), leaf(gen, heads, 9, 6)
    extra = leaf(gen, heads, 4, 3, 6) if with_extra else None
    got = info_nce_queue(q, k, queue, 0.2, extra_negatives=extra)
    expect = ref.info_nce(q, k, queue, 0.2, extra=extra)
    assert ref.rel_err(got.detach(), expect.detach()) <= 1e-6
    for a, b in zip(torch.autograd.grad(got, [q, k]), torch.autograd.grad(expect, [q, k])):
        assert ref.rel_err(a, b) <= 1e-6


def test_single_head_2d_inputs():
    gen = torch.Generator().manual_seed(0)
    q, k, queue = leaf(gen, 4, 6), leaf(gen, 4, 6), leaf(gen, 9, 6)
    assert info_nce_queue(q, k, queue).item() == pytest.approx(
        info_nce_queue(q[None], k[None], queue[None]).item(), rel=1e-12)


def test_bad_input():
    q = torch.randn(2, 4, 8)
    for call, word in [(lambda: info_nce_queue(q, q, torch.randn(3, 5, 8)), "queue"),
                       (lambda: info_nce_queue(q, torch.randn(2, 3, 8), torch.randn(2, 5, 8)), "shape"),
                       (lambda: info_nce_queue(q, q, torch.randn(2, 5, 8), extra_negatives=torch.randn(2, 4, 8)),
                        "extra_negatives"),
                       (lambda: info_nce_queue(q, q, torch.full((2, 5, 8), float("inf"))), "non-finite")]:
        with pytest.raises(UserError, match=word) as info:
            call()
        assert "\n" not in str(info.value)
