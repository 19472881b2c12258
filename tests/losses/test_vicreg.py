"""VICReg against the float64 loop reference written from the paper: value and gradient, every term."""
from __future__ import annotations

import pytest
import torch

from ffcv_amcl.errors import UserError
from ffcv_amcl.losses.vicreg import vicreg_loss

from . import reference as ref


@pytest.mark.parametrize("heads,weights", [(1, (25.0, 25.0, 1.0)), (3, (25.0, 25.0, 1.0)), (2, (0.0, 1.0, 0.0)),
                                           (2, (0.0, 0.0, 1.0)), (2, (1.0, 0.0, 0.0))])
def test_matches_reference(heads, weights):
    gen = torch.Generator().manual_seed(heads)
    # scale 0.5: some dimensions below the unit std, so the variance hinge is active for some and not others
    za, zb = (0.5 * torch.randn(heads, 6, 4, generator=gen, dtype=torch.float64) for _ in range(2))
    za[..., 0] *= 4
    za.requires_grad_(True), zb.requires_grad_(True)
    sim, var, cov = weights
    got = vicreg_loss(za, zb, sim_weight=sim, var_weight=var, cov_weight=cov, eps=1e-4)
    expect = ref.vicreg(za, zb, sim, var, cov, 1e-4)
    assert ref.rel_err(got.detach(), expect.detach()) <= 1e-10
    for a, b in zip(torch.autograd.grad(got, [za, zb]), torch.autograd.grad(expect, [za, zb])):
        assert ref.rel_err(a, b) <= 1e-10


def test_identical_decorrelated_unit_variance_views_cost_nothing():
    z = torch.randn(64, 8, dtype=torch.float64)
    q = torch.linalg.qr(z - z.mean(0))[0]             # centred, orthonormal columns: covariance 0
    z = (q * 63 ** 0.5 * (1 + 1e-3)).unsqueeze(0)      # unbiased std just above 1: no variance hinge
    assert vicreg_loss(z, z.clone()).item() < 1e-3


def test_bad_settings_are_one_line():
    z = torch.randn(1, 4, 3)
    with pytest.raises(UserError, match="eps=0.0 must be a finite number > 0"):
        vicreg_loss(z, z, eps=0.0)
    with pytest.raises(UserError, match="sim_weight=-1"):
        vicreg_loss(z, z, sim_weight=-1)


def test_non_finite_inputs_are_one_line():
    z = torch.randn(1, 4, 3)
    with pytest.raises(UserError, match="non-finite values"):
        vicreg_loss(z, z.clone().fill_(float("nan")))
