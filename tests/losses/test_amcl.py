"""AMCL losses against float64 loop references (values and gradients), precision limits and bad input."""
from __future__ import annotations

import pytest
import torch

from ffcv_amcl.errors import UserError
from ffcv_amcl.losses.amcl import AMCLBarlowTwins, AMCLContrastive, AMCLSimSiam
from ffcv_amcl.model.heads import MultiHeadProjector

from . import reference as ref

TOL = 1e-6
HEADS = [1, 2, 3, 8]


def randn(gen, *shape):
    return torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_()


def spread_phi(module, seq, scale=2.0):
    """Larger phi weights so that temperatures vary widely across pairs (not all near the midpoint)."""
    with torch.no_grad():
        for p in seq.parameters():
            p.mul_(scale)


def assert_matches(lib_loss, ref_loss, wrt):
    assert ref.rel_err(lib_loss.detach(), ref_loss.detach()) <= TOL
    g_lib = torch.autograd.grad(lib_loss, wrt)
    g_ref = torch.autograd.grad(ref_loss, wrt)
    for a, b in zip(g_lib, g_ref):
        assert b.abs().max() > 0
        assert ref.rel_err(a, b) <= TOL


# ---- SimCLR form ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("threads", [1, 2], indirect=True)   # 2: the 3 heads' products cut into row blocks
@pytest.mark.parametrize("heads", HEADS)
@pytest.mark.parametrize("topk", [3, 50])          # 50 > the 2B - 2 = 4 negatives
def test_simclr_form_matches_reference(heads, topk, threads):
    gen = torch.Generator().manual_seed(heads * 100 + topk)
    B, D = 3, 5
    torch.manual_seed(heads)
    loss = AMCLContrastive(D, heads, beta=0.05, topk=topk, hidden=6, form="ref").double()
    spread_phi(loss, loss.phi)
    za, zb = randn(gen, heads, B, D), randn(gen, heads, B, D)
    params = ref.phi_params(loss.phi)
    expect = ref.amcl_simclr(za, zb, params, 0.05, topk, 1e-5, 2.0)
    assert_matches(loss(za, zb), expect, [za, zb, *params])


def test_simclr_stats_are_mean_temperatures():
    gen = torch.Generator().manual_seed(7)
    C, B, D, k = 2, 3, 4, 2
    torch.manual_seed(0)
    loss = AMCLContrastive(D, C, topk=k, tau_min=0.1, tau_max=1.5, hidden=5, form="ref").double()
    spread_phi(loss, loss.phi)
    za, zb = randn(gen, C, B, D), randn(gen, C, B, D)
    loss(za, zb)
    params = ref.phi_params(loss.phi)
    for c in range(C):
        views = [ref.unit(za[c, i]) for i in range(B)] + [ref.unit(zb[c, i]) for i in range(B)]
        pos, neg = [], []
        for i in range(2 * B):
            p = (i + B) % (2 * B)
            pos.append(ref.tau(params, views[i], views[p], 0.1, 1.5).item())
            cands = sorted((j for j in range(2 * B) if j not in (i, p)),
                           key=lambda j: (views[i] * views[j]).sum().item(), reverse=True)[:k]
            neg += [ref.tau(params, views[i], views[j], 0.1, 1.5).item() for j in cands]
        assert loss.last_stats["tau_pos"][c].item() == pytest.approx(sum(pos) / len(pos), rel=1e-6)
        assert loss.last_stats["tau_neg"][c].item() == pytest.approx(sum(neg) / len(neg), rel=1e-6)
    for v in loss.last_stats.values():
        assert v.shape == (C,) and v.dtype == torch.float32 and not v.requires_grad


def test_heads_are_independent_sums():
    """The batched loss over C heads equals the sum of C one-head losses with the same phi."""
    torch.manual_seed(3)
    C, B, D = 3, 5, 8
    za, zb = torch.randn(C, B, D), torch.randn(C, B, D)
    multi = AMCLContrastive(D, C, topk=4)
    single = AMCLContrastive(D, 1, topk=4)
    single.load_state_dict(multi.state_dict())
    total = sum(single(za[c:c + 1], zb[c:c + 1]) for c in range(C))
    assert multi(za, zb).item() == pytest.approx(total.item(), rel=1e-5)


# ---- MoCo form -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("threads", [1, 2], indirect=True)
@pytest.mark.parametrize("heads", HEADS)
@pytest.mark.parametrize("with_keys", [False, True])
def test_moco_form_matches_reference(heads, with_keys, threads):
    gen = torch.Generator().manual_seed(heads * 10 + with_keys)
    B, D, K, topk = 3, 5, 7, 4
    torch.manual_seed(heads)
    loss = AMCLContrastive(D, heads, beta=0.05, topk=topk, hidden=6, form="ref").double()
    spread_phi(loss, loss.phi)
    za, zb = randn(gen, heads, B, D), randn(gen, heads, B, D)
    queue = randn(gen, heads, K, D)                    # a different queue for every head
    keys = (randn(gen, heads, B, D), randn(gen, heads, B, D)) if with_keys else None
    params = ref.phi_params(loss.phi)
    expect = ref.amcl_moco(za, zb, queue, params, 0.05, topk, 1e-5, 2.0, keys=keys)
    got = loss(za, zb, queue, keys=keys)
    assert_matches(got, expect, [za, zb, *params])
    # queue and keys are detached inside
    got = loss(za, zb, queue, keys=keys)
    extra = [queue] + (list(keys) if keys else [])
    assert all(g is None for g in torch.autograd.grad(got, extra, allow_unused=True))


@pytest.mark.parametrize("heads", [1, 3])
def test_moco_form_extra_negatives_and_topk_above_count(heads):
    gen = torch.Generator().manual_seed(heads)
    B, D, K, S = 2, 4, 3, 2
    torch.manual_seed(heads)
    for topk in (4, 50):                                # 50 > K + S = 5 candidates
        loss = AMCLContrastive(D, heads, beta=0.05, topk=topk, hidden=5, form="ref").double()
        spread_phi(loss, loss.phi)
        za, zb = randn(gen, heads, B, D), randn(gen, heads, B, D)
        queue, extra = randn(gen, heads, K, D), randn(gen, heads, 2 * B, S, D)
        keys = (randn(gen, heads, B, D), randn(gen, heads, B, D))
        params = ref.phi_params(loss.phi)
        expect = ref.amcl_moco(za, zb, queue, params, 0.05, topk, 1e-5, 2.0, keys=keys, extra=extra)
        assert_matches(loss(za, zb, queue, keys=keys, extra_negatives=extra), expect, [za, zb, *params])


# ---- SimSiam and Barlow Twins ---------------------------------------------------------------------------------

@pytest.mark.parametrize("heads", HEADS)
def test_simsiam_matches_reference(heads):
    gen = torch.Generator().manual_seed(heads)
    B, D = 3, 5
    torch.manual_seed(heads)
    loss = AMCLSimSiam(D, heads, beta=0.05, hidden=6, form="ref").double()
    spread_phi(loss, loss.phi)
    pa, pb, za, zb = (randn(gen, heads, B, D) for _ in range(4))
    params = ref.phi_params(loss.phi)
    expect = ref.amcl_simsiam(pa, pb, za, zb, params, 0.05, 1e-5, 2.0)
    assert_matches(loss(pa, pb, za, zb), expect, [pa, pb, *params])
    got = loss(pa, pb, za, zb)
    assert all(g is None for g in torch.autograd.grad(got, [za, zb], allow_unused=True))   # stop-gradient
    assert torch.isnan(loss.last_stats["tau_neg"]).all()


@pytest.mark.parametrize("heads", HEADS)
def test_barlow_matches_reference(heads):
    gen = torch.Generator().manual_seed(heads)
    B, D = 5, 4
    torch.manual_seed(heads)
    loss = AMCLBarlowTwins(D, heads, batch_size=B, beta=0.01, lambd=0.3, hidden=6, form="ref").double()
    za, zb = randn(gen, heads, B, D), randn(gen, heads, B, D)
    params = ref.phi_params(loss.phi_b)
    expect = ref.amcl_barlow(za, zb, params, 0.01, 0.3, 1e-5, 2.0)
    assert_matches(loss(za, zb), expect, [za, zb, *params])


# ---- precision: bf16 autocast with temperatures pinned at tau_min and tau_max ----------------------------------

def identity_phi(seq, dim, gain):
    """phi(u) = gain * u, built from ReLU(u) - ReLU(-u): <phi(u), phi(v)> = gain^2 <u, v>."""
    eye = torch.eye(dim)
    with torch.no_grad():
        seq[0].weight.copy_(torch.cat([eye, -eye]))
        seq[0].bias.zero_()
        seq[2].weight.copy_(gain * torch.cat([eye, -eye], 1))
        seq[2].bias.zero_()


@pytest.mark.parametrize("form", ["simclr", "moco"])
def test_bf16_autocast_finite_with_tau_at_both_bounds(form):
    torch.manual_seed(0)
    C, B, F, D = 3, 6, 16, 8
    proj = MultiHeadProjector(F, 16, D, C, "mlp")
    loss = AMCLContrastive(D, C, topk=2 if form == "simclr" else 1, hidden=2 * D, form="ref")
    identity_phi(loss.phi, D, gain=300.0)
    x, noise = torch.randn(B, F), torch.randn(B, F)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        za = proj(x)
        zb = -za + 0.05 * proj(noise)      # positives anti-aligned -> tau+ = tau_max; hardest negatives -> tau_min
        assert za.dtype == torch.bfloat16
        if form == "simclr":
            value = loss(za, zb)
        else:
            # the queue holds every anchor itself: the hardest negative has cosine 1 -> tau_min
            value = loss(za, zb, torch.cat([za, zb], 1).detach(), keys=(za.detach(), zb.detach()))
    assert torch.isfinite(value)
    value.backward()
    stats = loss.last_stats
    assert torch.allclose(stats["tau_pos"], torch.full((C,), 2.0), rtol=1e-3)
    assert (stats["tau_neg"] < 1e-3).all()
    for p in [*proj.parameters(), *loss.phi.parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all()


def test_gradients_reach_every_head_and_phi():
    torch.manual_seed(1)
    C, B, F, D = 3, 6, 12, 8
    x = torch.randn(2 * B, F)
    cases = [
        (MultiHeadProjector(F, 16, D, C, "mlp"), AMCLContrastive(D, C, topk=5), lambda z: (z[:, :B], z[:, B:])),
        (MultiHeadProjector(F, 16, D, C, "bn_mlp"), AMCLSimSiam(D, C),
         lambda z: (z[:, :B], z[:, B:], z[:, :B].flip(1), z[:, B:].flip(1))),
        (MultiHeadProjector(F, 16, D, C, "bn_mlp"), AMCLBarlowTwins(D, C, batch_size=B),
         lambda z: (z[:, :B], z[:, B:])),
    ]
    for proj, loss, split in cases:
        loss(*split(proj(x))).backward()
        for c in range(C):
            assert proj.fc1.weight.grad[c].abs().sum() > 0, (type(loss).__name__, c)
            assert proj.fc2.weight.grad[c].abs().sum() > 0, (type(loss).__name__, c)
        phi = loss.phi_b if isinstance(loss, AMCLBarlowTwins) else loss.phi
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in phi.parameters())


# ---- bad input -----------------------------------------------------------------------------------------------

def one_line_error(fn, *words):
    with pytest.raises(UserError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg
    return msg


def test_bad_input_messages():
    z = torch.randn(2, 4, 8)
    loss = AMCLContrastive(8, 2)
    one_line_error(lambda: loss(z, torch.randn(2, 5, 8)), "shape")
    one_line_error(lambda: loss(torch.randn(3, 4, 8), torch.randn(3, 4, 8)), "heads")
    one_line_error(lambda: loss(torch.randn(2, 4, 6), torch.randn(2, 4, 6)), "dim")
    one_line_error(lambda: loss(torch.randn(2, 1, 8), torch.randn(2, 1, 8)), "batch size")
    one_line_error(lambda: loss(torch.randn(4, 8), torch.randn(4, 8)), "3-D")
    bad = z.clone()
    bad[1, 2, 3] = float("nan")
    one_line_error(lambda: loss(bad, z), "non-finite", "za")
    one_line_error(lambda: loss(z, z, torch.randn(3, 5, 8)), "queue")
    one_line_error(lambda: loss(z, z, keys=(z, z)), "MoCo form")
    one_line_error(lambda: loss(z, z, torch.randn(2, 5, 8), extra_negatives=torch.randn(2, 4, 3, 8)),
                   "extra_negatives")
    for lo, hi in [(0.0, 1.0), (1.0, 0.5), (0.5, 0.5), (-1.0, 2.0)]:
        one_line_error(lambda: AMCLContrastive(8, 2, tau_min=lo, tau_max=hi), "tau_min")
        one_line_error(lambda: AMCLSimSiam(8, 2, tau_min=lo, tau_max=hi), "tau_min")
        one_line_error(lambda: AMCLBarlowTwins(8, 2, 4, tau_min=lo, tau_max=hi), "tau_min")
    one_line_error(lambda: AMCLContrastive(8, 0), "heads")
    one_line_error(lambda: AMCLSimSiam(8, 2)(z, z, z, torch.randn(2, 4, 7)), "shape")
    one_line_error(lambda: AMCLBarlowTwins(8, 2, batch_size=6)(z, z), "batch size 4", "batch_size=6")


def test_validate_false_skips_the_finite_check():
    z = torch.randn(2, 4, 8)
    bad = z.clone()
    bad[0, 0, 0] = float("inf")
    assert not torch.isfinite(AMCLContrastive(8, 2, validate=False)(bad, z))
