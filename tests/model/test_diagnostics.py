"""temperature_pairs (model/diagnostics.py): the temperatures each method's AMCL loss gives the pairs it compares,
checked pair by pair against phi evaluated on each pair's two vectors in float64 (the diagnostics read the
projections in float32, hence the tolerance)."""
import pytest
import torch

from ffcv_amcl.model.diagnostics import temperature_pairs
from ffcv_amcl.model.ssl import build_model
from tests.losses import reference as ref

from .test_ssl import cfg, views


def fp64_model(method, *extra):
    torch.manual_seed(0)
    model = build_model(cfg(f"--model.method={method}", "--model.amcl=1", "--model.heads=2",
                            "--training.precision=fp64", "--loss.tau_min=0.05", *extra))
    return model.eval()


def tau_of(model, u, v):
    t = model.criterion
    return ref.tau(ref.phi_params(t.phi_b if hasattr(t, "phi_b") else t.phi), u, v, t.tau_min, t.tau_max).item()


def inputs(n):
    a, b = views(n)
    return a.double(), b.double()


@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_contrastive_pairs_are_the_views_of_the_batch(method):
    model = fp64_model(method)
    a, b = inputs(3)
    pairs = temperature_pairs(model, a, b)
    assert pairs.kind == "views" and pairs.tau.shape == (2, 6, 6)
    with torch.no_grad():
        z = model.projector(model.backbone(torch.cat([a, b])))
    n = 3
    assert pairs.pos.sum() == n and pairs.neg.sum() == 2 * n * (n - 1)
    for c in range(2):
        u = [ref.unit(z[c, i]) for i in range(2 * n)]
        for i, j in zip(*torch.nonzero(pairs.pos | pairs.neg, as_tuple=True)):
            assert (i % n == j % n) == bool(pairs.pos[i, j]) and i < j
            assert pairs.tau[c, i, j].item() == pytest.approx(tau_of(model, u[i], u[j]), rel=1e-6)


@pytest.mark.parametrize("method", ["simsiam", "byol"])
def test_siamese_pairs_are_predictions_against_the_other_views_targets(method):
    model = fp64_model(method)
    if method == "byol":
        with torch.no_grad():              # a target that differs from the online encoder
            for p in model.target_projector.parameters():
                p.add_(0.1 * torch.randn_like(p))
    a, b = inputs(3)
    n = 3
    pairs = temperature_pairs(model, a, b)
    assert pairs.kind == "predictor" and pairs.tau.shape == (2, 2 * n, 2 * n)
    x = torch.cat([a, b])
    with torch.no_grad():
        z = model.projector(model.backbone(x))
        pred = model.predictor(z)
        target = z if method == "simsiam" else model.target_projector(model.target_backbone(x))
    assert torch.equal(pairs.pos, torch.eye(2 * n, dtype=torch.bool)) and pairs.neg.sum() == 2 * n * (2 * n - 1)
    for c in range(2):
        for i in range(2 * n):
            for j in range(2 * n):
                partner = target[c, (j + n) % (2 * n)]        # prediction of view a meets the target of view b
                expect = tau_of(model, ref.unit(pred[c, i]), ref.unit(partner))
                assert pairs.tau[c, i, j].item() == pytest.approx(expect, rel=1e-6)


def test_barlow_pairs_are_channel_vectors_of_the_training_batch():
    model = fp64_model("barlow_twins")
    a, b = inputs(8)                        # the training batch size: phi_b reads length-8 channel vectors
    pairs = temperature_pairs(model, a, b)
    assert pairs.kind == "channels" and pairs.tau.shape == (2, 16, 16)
    with torch.no_grad():
        z = model.projector(model.backbone(torch.cat([a, b])))
    for c in range(2):
        for l, m in [(0, 0), (3, 3), (0, 5), (7, 2), (15, 14)]:
            expect = tau_of(model, z[c, :8, l], z[c, 8:, m])
            assert pairs.tau[c, l, m].item() == pytest.approx(expect, rel=1e-6)
            assert bool(pairs.pos[l, m]) == (l == m) != bool(pairs.neg[l, m])
    assert temperature_pairs(model, *inputs(4)) is None     # another batch size: phi_b cannot read it


@pytest.mark.parametrize("method", ["simclr", "simsiam", "barlow_twins"])
def test_no_pairs_without_amcl(method):
    model = build_model(cfg(f"--model.method={method}", "--model.amcl=0"))
    assert temperature_pairs(model, *views(8)) is None
