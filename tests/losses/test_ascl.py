"""ASCL soft targets against the float64 loop reference (Feng & Patras 2022); K = 0 is MoCo's InfoNCE."""
from __future__ import annotations

import pytest
import torch

from ffcv_amcl.errors import UserError
from ffcv_amcl.losses.ascl import ascl_loss
from ffcv_amcl.losses.moco import info_nce_queue

from . import reference as ref


def leaf(gen, *shape):
    return torch.randn(*shape, generator=gen, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("variant,K", [("ascl", 5), ("ascl", 2.5), ("ahcl", 3), ("hard", 3)])
@pytest.mark.parametrize("heads", [1, 3])
@pytest.mark.parametrize("t2", [0.05, 0.5])
def test_matches_reference(variant, K, heads, t2):
    gen = torch.Generator().manual_seed(heads)
    q, k, queue = leaf(gen, heads, 4, 6), leaf(gen, heads, 4, 6), leaf(gen, heads, 9, 6)
    got = ascl_loss(q, k, queue, K=K, t1=0.2, t2=t2, variant=variant)
    expect = ref.ascl(q, k, queue, K, 0.2, t2, variant)
    assert ref.rel_err(got.detach(), expect.detach()) <= 1e-6
    assert ref.rel_err(torch.autograd.grad(got, q)[0], torch.autograd.grad(expect, q)[0]) <= 1e-6
    got = ascl_loss(q, k, queue, K=K, t1=0.2, t2=t2, variant=variant)
    assert torch.autograd.grad(got, [k, queue], allow_unused=True) == (None, None)


def test_soft_weights_reach_the_clamp():
    """With a peaked neighbourhood K c p exceeds 1 somewhere, so min(., 1) is exercised by the reference test."""
    gen = torch.Generator().manual_seed(1)
    k = torch.nn.functional.normalize(torch.randn(1, 4, 6, generator=gen, dtype=torch.float64), dim=-1)
    queue = torch.nn.functional.normalize(torch.randn(1, 9, 6, generator=gen, dtype=torch.float64), dim=-1)
    p = torch.softmax(k @ queue.transpose(1, 2) / 0.05, -1)
    conf = 1 + (p * p.log()).sum(-1, keepdim=True) / torch.log(torch.tensor(9.0, dtype=torch.float64))
    assert (5 * conf * p > 1).any()


@pytest.mark.parametrize("variant", ["ascl", "ahcl", "hard"])
def test_k_zero_is_moco_infonce(variant):
    gen = torch.Generator().manual_seed(2)
    q, k, queue = leaf(gen, 3, 5, 8), leaf(gen, 3, 5, 8), leaf(gen, 3, 11, 8)
    assert ascl_loss(q, k, queue, K=0, t1=0.1, variant=variant).item() == pytest.approx(
        info_nce_queue(q, k, queue, 0.1).item(), rel=1e-12)
    assert ascl_loss(q[0], k[0], queue[0], K=0).item() == pytest.approx(
        info_nce_queue(q[0], k[0], queue[0], 0.1).item(), rel=1e-12)


def test_bad_input():
    q, queue = torch.randn(4, 8), torch.randn(10, 8)
    for kwargs, word in [(dict(variant="soft"), "unknown variant"), (dict(K=11, variant="hard"), "K=11"),
                         (dict(K=2.5, variant="ahcl"), "whole number"), (dict(K=-1), "K=-1"),
                         (dict(t1=0), "t1")]:
        with pytest.raises(UserError, match=word) as info:
            ascl_loss(q, q, queue, **kwargs)
        assert "\n" not in str(info.value)
