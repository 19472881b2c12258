"""Barlow Twins against the float64 loop reference; AMCL with T = 1 and beta = 0 equals it."""
from __future__ import annotations

import pytest
import torch

from ffcv_amcl.errors import UserError
from ffcv_amcl.losses.amcl import AMCLBarlowTwins
from ffcv_amcl.losses.barlow import barlow_twins

from . import reference as ref


@pytest.mark.parametrize("heads", [1, 2, 3, 8])
def test_matches_reference(heads):
    gen = torch.Generator().manual_seed(heads)
    za, zb = (torch.randn(heads, 5, 4, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(2))
    got, expect = barlow_twins(za, zb, 0.3), ref.barlow(za, zb, 0.3)
    assert ref.rel_err(got.detach(), expect.detach()) <= 1e-6
    for a, b in zip(torch.autograd.grad(got, [za, zb]), torch.autograd.grad(expect, [za, zb])):
        assert ref.rel_err(a, b) <= 1e-6


def test_amcl_with_unit_temperature_and_no_regulariser_equals_baseline():
    torch.manual_seed(0)
    C, B, D = 3, 6, 5
    za, zb = torch.randn(C, B, D), torch.randn(C, B, D)
    amcl = AMCLBarlowTwins(D, C, batch_size=B, beta=0.0, lambd=0.01, tau_min=0.5, tau_max=1.5, form="ref")
    with torch.no_grad():
        amcl.phi_b[2].weight.zero_()
        amcl.phi_b[2].bias.zero_()
    assert amcl(za, zb).item() == pytest.approx(barlow_twins(za, zb, 0.01).item(), rel=1e-6)
    assert torch.allclose(amcl.last_stats["tau_pos"], torch.ones(C))


def test_amcl_rejects_wrong_batch_size():
    loss = AMCLBarlowTwins(8, 2, batch_size=16)
    with pytest.raises(UserError, match="batch size 12 differs from batch_size=16") as info:
        loss(torch.randn(2, 12, 8), torch.randn(2, 12, 8))
    assert "\n" not in str(info.value)
