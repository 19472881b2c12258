"""SimSiam negative cosine against the float64 loop reference; stop-gradient on z; AMCL reduces to it."""
from __future__ import annotations

import pytest
import torch

from ffcv_amcl.errors import UserError
from ffcv_amcl.losses.amcl import AMCLSimSiam
from ffcv_amcl.losses.simsiam import negative_cosine

from . import reference as ref


@pytest.mark.parametrize("heads", [1, 2, 3, 8])
def test_matches_reference_and_stops_gradient(heads):
    gen = torch.Generator().manual_seed(heads)
    pa, pb, za, zb = (torch.randn(heads, 4, 6, generator=gen, dtype=torch.float64, requires_grad=True)
                      for _ in range(4))
    got, expect = negative_cosine(pa, pb, za, zb), ref.negative_cosine(pa, pb, za, zb)
    assert ref.rel_err(got.detach(), expect.detach()) <= 1e-6
    for a, b in zip(torch.autograd.grad(got, [pa, pb]), torch.autograd.grad(expect, [pa, pb])):
        assert ref.rel_err(a, b) <= 1e-6
    got = negative_cosine(pa, pb, za, zb)
    assert torch.autograd.grad(got, [za, zb], allow_unused=True) == (None, None)


def test_amcl_with_unit_temperature_and_no_regulariser_equals_baseline():
    """phi = 0 gives tau = (tau_min + tau_max) / 2 = 1; with beta = 0, Eq. 2.2 is SimSiam's loss."""
    torch.manual_seed(0)
    C, B, D = 3, 5, 8
    pa, pb, za, zb = (torch.randn(C, B, D, dtype=torch.float64) for _ in range(4))
    amcl = AMCLSimSiam(D, C, beta=0.0, tau_min=0.5, tau_max=1.5, form="ref").double()
    with torch.no_grad():
        amcl.phi[2].weight.zero_()
        amcl.phi[2].bias.zero_()
    assert amcl(pa, pb, za, zb).item() == pytest.approx(negative_cosine(pa, pb, za, zb).item(), rel=1e-6)


def test_bad_input():
    z = torch.randn(2, 4, 8)
    with pytest.raises(UserError, match="shape"):
        negative_cosine(z, z, z, torch.randn(2, 4, 9))


@pytest.mark.parametrize("byol", [False, True])
@pytest.mark.parametrize("views", [2, 5])
def test_multi_view_forms_match_the_reference_and_two_views_are_the_classic_loss(byol, views):
    from ffcv_amcl.losses import byol_loss, multi_view_byol_loss, multi_view_negative_cosine, negative_cosine

    gen = torch.Generator().manual_seed(views)
    p = torch.randn(2, views, 4, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 2, 4, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    loss = multi_view_byol_loss if byol else multi_view_negative_cosine
    got, expect = loss(p, t), ref.multi_view_siamese(p, t, byol)
    assert ref.rel_err(got.detach(), expect.detach()) <= 1e-10
    assert ref.rel_err(torch.autograd.grad(got, p)[0], torch.autograd.grad(expect, p)[0]) <= 1e-10
    assert torch.autograd.grad(loss(p, t), t, allow_unused=True)[0] is None     # targets: stop-gradient
    if views == 2:
        classic = (byol_loss if byol else negative_cosine)(p[:, 0], p[:, 1], t[:, 0], t[:, 1])
        torch.testing.assert_close(got, classic, rtol=1e-12, atol=0)
