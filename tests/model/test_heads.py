"""Stacked multi-head projector/predictor against an explicit loop of per-head nn.Linear / nn.BatchNorm1d."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ffcv_amcl.errors import UserError
from ffcv_amcl.model.heads import MultiHeadPredictor, MultiHeadProjector


def linear_of(stacked, c):
    """nn.Linear holding head c's slice of a StackedLinear."""
    w = stacked.weight[c]
    lin = nn.Linear(w.shape[0], w.shape[1], bias=stacked.bias is not None).double()
    with torch.no_grad():
        lin.weight.copy_(w.T)
        if stacked.bias is not None:
            lin.bias.copy_(stacked.bias[c])
    return lin


def bn_of(stacked_bn, c, affine=True):
    H = stacked_bn.features
    bn = nn.BatchNorm1d(H, affine=affine).double()
    with torch.no_grad():
        if affine:
            bn.weight.copy_(stacked_bn.bn.weight[c * H:(c + 1) * H])
            bn.bias.copy_(stacked_bn.bn.bias[c * H:(c + 1) * H])
    return bn


def loop_projector(proj):
    heads = []
    for c in range(proj.heads):
        if proj.kind == "mlp":
            heads.append(nn.Sequential(linear_of(proj.fc1, c), nn.ReLU(), linear_of(proj.fc2, c)))
        else:
            heads.append(nn.Sequential(linear_of(proj.fc1, c), bn_of(proj.bn1, c), nn.ReLU(),
                                       linear_of(proj.fc2, c), bn_of(proj.bn2, c, affine=False)))
    return heads


def perturb_affine(module):
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm1d) and m.affine:
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)


@pytest.mark.parametrize("kind", ["mlp", "bn_mlp"])
@pytest.mark.parametrize("heads", [1, 3])
def test_projector_matches_per_head_loop(kind, heads):
    torch.manual_seed(heads)
    proj = MultiHeadProjector(7, 9, 5, heads, kind).double()
    perturb_affine(proj)
    loop = loop_projector(proj)
    x = torch.randn(6, 7, dtype=torch.float64, requires_grad=True)
    got = proj(x)
    want = torch.stack([h(x) for h in loop])
    assert got.shape == (heads, 6, 5)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)
    w = torch.randn_like(got)
    fc2 = -1 if kind == "mlp" else 3
    g_got = torch.autograd.grad((got * w).sum(), [x, proj.fc1.weight, proj.fc2.weight])
    g_want = torch.autograd.grad((want * w).sum(), [x] + [h[0].weight for h in loop] + [h[fc2].weight for h in loop])
    assert torch.allclose(g_got[0], g_want[0], rtol=1e-12, atol=1e-12)
    for c in range(heads):
        assert torch.allclose(g_got[1][c], g_want[1 + c].T, atol=1e-12)
        assert torch.allclose(g_got[2][c], g_want[1 + heads + c].T, atol=1e-12)
    if kind == "bn_mlp":   # running statistics and eval mode agree too
        H = proj.hidden_dim
        for c, h in enumerate(loop):
            assert torch.allclose(proj.bn1.bn.running_mean[c * H:(c + 1) * H], h[1].running_mean, atol=1e-12)
            assert torch.allclose(proj.bn1.bn.running_var[c * H:(c + 1) * H], h[1].running_var, atol=1e-12)
        proj.eval()
        for h in loop:
            h.eval()
        x2 = torch.randn(4, 7, dtype=torch.float64)
        assert torch.allclose(proj(x2), torch.stack([h(x2) for h in loop]), atol=1e-12)


def test_predictor_matches_per_head_loop():
    torch.manual_seed(0)
    C = 3
    pred = MultiHeadPredictor(6, 4, C).double()
    perturb_affine(pred)
    z = torch.randn(C, 5, 6, dtype=torch.float64)
    want = torch.stack([nn.Sequential(linear_of(pred.fc1, c), bn_of(pred.bn1, c), nn.ReLU(),
                                      linear_of(pred.fc2, c))(z[c]) for c in range(C)])
    assert torch.allclose(pred(z), want, atol=1e-12)


def test_one_head_initialised_like_nn_linear():
    """Each head's weights are U(-1/sqrt(in), 1/sqrt(in)), the distribution of nn.Linear's default init."""
    torch.manual_seed(0)
    F, H = 256, 300
    proj = MultiHeadProjector(F, H, 64, 2, "mlp")
    ref = nn.Linear(F, H)
    for c in range(2):
        w = proj.fc1.weight[c]
        bound = 1 / math.sqrt(F)
        assert w.abs().max() <= bound and w.abs().max() > 0.99 * bound
        assert w.std().item() == pytest.approx(ref.weight.std().item(), rel=0.03)
        assert proj.fc1.bias[c].abs().max() <= bound
    assert not torch.equal(proj.fc1.weight[0], proj.fc1.weight[1])    # independent heads


def test_sync_batchnorm_conversion_and_autocast():
    proj = MultiHeadProjector(8, 16, 4, 3, "bn_mlp")
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(proj)
    assert sum(isinstance(m, nn.SyncBatchNorm) for m in converted.modules()) == 2
    mlp = MultiHeadProjector(8, 16, 4, 3, "mlp")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert mlp(torch.randn(5, 8)).dtype == torch.bfloat16


def test_bad_input():
    with pytest.raises(UserError, match="unknown kind"):
        MultiHeadProjector(8, 8, 4, 2, "resnet")
    with pytest.raises(UserError, match="heads"):
        MultiHeadProjector(8, 8, 4, 0)
    with pytest.raises(UserError, match=r"must be \(N, 8\)"):
        MultiHeadProjector(8, 8, 4, 2)(torch.randn(3, 9))
    with pytest.raises(UserError, match="heads=2"):
        MultiHeadPredictor(4, 8, 2)(torch.randn(3, 5, 4))
