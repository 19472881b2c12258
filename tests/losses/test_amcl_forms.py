"""The bounded AMCL forms (hetero, post, and ASCL composed with them) against float64 loop references written from
docs/amcl.md, their stated lower bounds under an optimiser that only moves phi, and their input checks."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ffcv_amcl.errors import UserError
from ffcv_amcl.losses.amcl import AMCLBarlowTwins, AMCLContrastive, AMCLSimSiam

from . import reference as ref
from .test_amcl import assert_matches, randn, spread_phi

T_MIN, T_MAX, D_NLL = 0.05, 2.0, 3.0


def contrastive(D, heads, topk, form, seed):
    """A float64 contrastive AMCL loss with phi spread so that temperatures differ across pairs."""
    torch.manual_seed(seed)
    loss = AMCLContrastive(D, heads, beta=0.5, topk=topk, tau_min=T_MIN, tau_max=T_MAX, hidden=6, form=form,
                           nll_dim=D_NLL).double()
    spread_phi(loss, loss.phi)
    return loss


@pytest.mark.parametrize("form", ["hetero", "post"])
@pytest.mark.parametrize("heads,topk", [(1, 3), (3, 50)])
def test_simclr_forms_match_reference(form, heads, topk):
    gen = torch.Generator().manual_seed(heads + topk)
    B, D = 3, 5
    loss = contrastive(D, heads, topk, form, seed=heads)
    za, zb = randn(gen, heads, B, D), randn(gen, heads, B, D)
    params = ref.phi_params(loss.phi)
    expect = ref.bounded_simclr(za, zb, params, form, 0.5, topk, T_MIN, T_MAX, D_NLL)
    assert_matches(loss(za, zb), expect, [za, zb, *params])


@pytest.mark.parametrize("form", ["hetero", "post"])
def test_moco_forms_match_reference(form):
    gen = torch.Generator().manual_seed(11)
    C, B, D, K, topk = 2, 3, 5, 7, 4
    loss = contrastive(D, C, topk, form, seed=2)
    za, zb, queue = randn(gen, C, B, D), randn(gen, C, B, D), randn(gen, C, K, D)
    keys = (randn(gen, C, B, D), randn(gen, C, B, D))
    params = ref.phi_params(loss.phi)
    expect = ref.bounded_moco(za, zb, queue, keys, params, form, 0.5, topk, T_MIN, T_MAX, D_NLL)
    assert_matches(loss(za, zb, queue, keys=keys), expect, [za, zb, *params])


@pytest.mark.parametrize("form", ["hetero", "post"])
def test_ascl_soft_targets_compose_with_the_softmax_forms(form):
    gen = torch.Generator().manual_seed(5)
    C, B, D, K, topk = 2, 3, 5, 9, 4
    loss = contrastive(D, C, topk, form, seed=3)
    q, k, queue = randn(gen, C, B, D), randn(gen, C, B, D), randn(gen, C, K, D)
    params = ref.phi_params(loss.phi)
    expect = ref.bounded_ascl(q, k, queue, params, form, 0.5, topk, T_MIN, T_MAX, D_NLL, K=5.0, t2=0.3)
    assert_matches(loss.forward_soft(q, k, queue, K=5.0, t2=0.3), expect, [q, *params])
    with pytest.raises(UserError, match="ref form"):
        AMCLContrastive(D, C, form="ref").forward_soft(q, k, queue)


def test_simsiam_and_barlow_hetero_match_reference():
    gen = torch.Generator().manual_seed(1)
    C, B, D = 2, 5, 4
    torch.manual_seed(0)
    siam = AMCLSimSiam(D, C, tau_min=T_MIN, tau_max=T_MAX, hidden=6, form="hetero", nll_dim=D_NLL).double()
    spread_phi(siam, siam.phi)
    pa, pb, za, zb = (randn(gen, C, B, D) for _ in range(4))
    params = ref.phi_params(siam.phi)
    assert_matches(siam(pa, pb, za, zb), ref.hetero_simsiam(pa, pb, za, zb, params, T_MIN, T_MAX, D_NLL),
                   [pa, pb, *params])
    bt = AMCLBarlowTwins(D, C, batch_size=B, lambd=0.3, tau_min=T_MIN, tau_max=T_MAX, hidden=6, form="hetero",
                         nll_dim=D_NLL).double()
    params = ref.phi_params(bt.phi_b)
    assert_matches(bt(za, zb), ref.hetero_barlow(za, zb, params, 0.3, T_MIN, T_MAX, D_NLL), [za, zb, *params])


def test_hetero_phi_learns_only_from_the_positive_nll():
    """phi's gradient is that of the positives' Gaussian NLL alone (the contrastive term sees detached
    temperatures), computed here from the public pair_temperatures."""
    torch.manual_seed(0)
    C, B, D = 2, 6, 8
    loss = AMCLContrastive(D, C, topk=5, tau_min=T_MIN, form="hetero")
    za, zb = torch.randn(C, B, D), torch.randn(C, B, D)
    phi = list(loss.phi.parameters())
    grads = torch.autograd.grad(loss(za, zb), phi)
    z = torch.cat([za, zb], 1)
    tau_pos = loss.pair_temperatures(z, z).diagonal(B, dim1=-2, dim2=-1)        # pairs (i, i + B)
    s_pos = (F.normalize(za, dim=-1) * F.normalize(zb, dim=-1)).sum(-1)
    nll = torch.cat([ref.nll(1 - s_pos, tau_pos, 2.0)] * 2, 1)                  # both directions, same pairs
    for a, b in zip(grads, torch.autograd.grad(nll.mean(-1).sum(), phi)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert loss.last_pairs["tau_pos"].shape == (C, 2 * B) and loss.last_pairs["tau_neg"].shape == (C, 2 * B, 5)


class ConstantOutput(torch.nn.Module):
    """phi's own values, computed without a graph: temperatures as constants the loss cannot differentiate."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        with torch.no_grad():
            return self.net(x)


@pytest.mark.parametrize("make,phi", [
    (lambda: AMCLContrastive(8, 2, topk=5, form="hetero"), "phi"),
    (lambda: AMCLSimSiam(8, 2, form="hetero"), "phi"),
    (lambda: AMCLBarlowTwins(8, 2, batch_size=6, form="hetero"), "phi_b"),
], ids=["contrastive", "simsiam", "barlow"])
def test_hetero_nll_sends_no_gradient_to_the_projections(make, phi):
    """The projections' gradient equals the one with the temperatures turned into constants: phi reads detached
    vectors, so the NLL that trains phi adds nothing to what the encoder learns."""
    torch.manual_seed(0)
    loss = make()
    views = [torch.randn(2, 6, 8, requires_grad=True) for _ in range(4 if isinstance(loss, AMCLSimSiam) else 2)]
    grads = torch.autograd.grad(loss(*views), views[:2])
    setattr(loss, phi, ConstantOutput(getattr(loss, phi)))
    for a, b in zip(grads, torch.autograd.grad(loss(*views), views[:2])):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# ---- the stated lower bound: optimise phi alone, on fixed embeddings -----------------------------------------------

def fixed_embeddings(B=48, D=16, seed=0):
    """Two views of B images with per-image noise levels: positive similarities spread over about [0.4, 0.95],
    so every positive's optimal temperature (1 - s+ for d = 2) lies inside [tau_min, tau_max]."""
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(B, D, generator=g), dim=-1)
    level = 0.25 + torch.rand(B, 1, generator=g) * 0.65
    view = lambda: F.normalize(x + level * F.normalize(torch.randn(B, D, generator=g), dim=-1), dim=-1)  # noqa
    return view().unsqueeze(0), view().unsqueeze(0)


def optimise_phi(form, steps=300, tau_min=0.02, **kw):
    torch.manual_seed(1)
    za, zb = fixed_embeddings()
    loss = AMCLContrastive(za.shape[-1], 1, topk=20, tau_min=tau_min, tau_max=2.0, hidden=32, form=form, **kw)
    opt = torch.optim.Adam(loss.phi.parameters(), lr=1e-2)
    lowest = float("inf")
    for _ in range(steps):
        value = loss(za, zb)
        lowest = min(lowest, value.item())
        opt.zero_grad()
        value.backward()
        opt.step()
    at_bound = {k: ((t <= tau_min * 1.01) | (t >= 2.0 * 0.99)).float().mean().item()
                for k, t in loss.last_pairs.items() if k.startswith("tau")}
    return loss, lowest, at_bound


def test_hetero_stays_above_its_bound_and_off_the_temperature_bounds():
    loss, lowest, at_bound = optimise_phi("hetero")
    assert loss.lower_bound() == pytest.approx(1 * 0.5 * 2.0 * torch.log(torch.tensor(0.02)).item())
    assert lowest >= loss.lower_bound()
    assert at_bound["tau_pos"] < 0.10 and at_bound["tau_neg"] < 0.10, at_bound
    s, t = loss.last_pairs["s_pos"][0], loss.last_pairs["tau_pos"][0]
    assert torch.corrcoef(torch.stack([s, t]))[0, 1] < -0.5      # harder positive pairs, higher temperature


def test_post_stays_above_zero_and_ref_has_no_bound():
    post, lowest, _ = optimise_phi("post", beta=1.0, steps=100)
    assert post.lower_bound() == 0.0 and lowest >= 0.0
    ref_form, lowest_ref, at_bound = optimise_phi("ref", steps=100, tau_min=1e-5)
    assert ref_form.lower_bound() == float("-inf")
    assert lowest_ref < -1e3 and at_bound["tau_pos"] > 0.9        # what the bounded forms fix


def test_form_checks():
    with pytest.raises(UserError, match="form='soft' is not one of ref, hetero, post") as info:
        AMCLContrastive(8, 2, form="soft")
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="not one of ref, hetero"):
        AMCLSimSiam(8, 2, form="post")
    with pytest.raises(UserError, match="nll_dim"):
        AMCLContrastive(8, 2, form="hetero", nll_dim=0)
