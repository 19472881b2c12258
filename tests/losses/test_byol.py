"""BYOL loss against the float64 loop reference; the target receives no gradient."""
from __future__ import annotations

import pytest
import torch

from ffcv_amcl.errors import UserError
from ffcv_amcl.losses.byol import byol_loss

from . import reference as ref


@pytest.mark.parametrize("heads", [1, 2, 3, 8])
def test_matches_reference_target_gets_no_gradient(heads):
    gen = torch.Generator().manual_seed(heads)
    pa, pb, ta, tb = (torch.randn(heads, 4, 6, generator=gen, dtype=torch.float64, requires_grad=True)
                      for _ in range(4))
    got, expect = byol_loss(pa, pb, ta, tb), ref.byol(pa, pb, ta, tb)
    assert ref.rel_err(got.detach(), expect.detach()) <= 1e-6
    for a, b in zip(torch.autograd.grad(got, [pa, pb]), torch.autograd.grad(expect, [pa, pb])):
        assert ref.rel_err(a, b) <= 1e-6
    got = byol_loss(pa, pb, ta, tb)
    assert torch.autograd.grad(got, [ta, tb], allow_unused=True) == (None, None)


def test_identical_prediction_and_target_give_zero():
    z = torch.randn(2, 5, 7)
    assert byol_loss(z, z, z, z).item() == pytest.approx(0.0, abs=1e-6)


def test_bad_input():
    z = torch.randn(2, 4, 8)
    with pytest.raises(UserError, match="shape"):
        byol_loss(z, z, z, torch.randn(3, 4, 8))
