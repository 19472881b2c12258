"""Collapse monitors against numpy: RankMe from the singular values (Garrido et al. 2023) and the per-dimension std
of L2-normalised projections; the thresholds against the untrained network of every method and a collapsed set."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ffcv_amcl.monitoring.collapse import (PROJ_STD_COLLAPSED, RANKME_COLLAPSED, collapse_fields, collapse_warning,
                                           proj_std, rankme)


def numpy_rankme(f: np.ndarray) -> float:
    s = np.linalg.svd(f.astype(np.float64), compute_uv=False)
    p = s / s.sum() + 1e-7
    return float(np.exp(-(p * np.log(p)).sum()))


def numpy_proj_std(z: np.ndarray) -> float:
    z = z.astype(np.float64)
    z = z / np.linalg.norm(z, axis=-1, keepdims=True)
    return float(z.std(axis=1, ddof=1).mean())


@pytest.mark.parametrize("n, f, rank", [(300, 64, 64), (300, 64, 5), (40, 64, 40)])
def test_rankme_matches_the_singular_values(n, f, rank):
    g = np.random.default_rng(rank)
    x = g.standard_normal((n, rank)) @ g.standard_normal((rank, f)) * g.uniform(0.1, 3, f)
    assert rankme(torch.tensor(x, dtype=torch.float32)) == pytest.approx(numpy_rankme(x), rel=1e-4)


def test_rankme_of_identical_rows_is_one():
    assert rankme(torch.zeros(50, 16)) == pytest.approx(1.0, abs=1e-3)
    assert rankme(torch.ones(50, 16)) == pytest.approx(1.0, abs=1e-3)


def test_proj_std_matches_numpy_and_its_healthy_scale():
    g = np.random.default_rng(0)
    z = g.standard_normal((3, 2000, 128))
    assert proj_std(torch.tensor(z)) == pytest.approx(numpy_proj_std(z), rel=1e-9)
    assert proj_std(torch.tensor(z)) == pytest.approx(1 / np.sqrt(128), rel=0.02)      # spread over the sphere
    assert proj_std(torch.ones(2, 10, 128)) == pytest.approx(0.0, abs=1e-12)


class OneHead(nn.Module):
    """A projector as the models have one: (N, F) -> (C, N, D), here C = 1, with BatchNorm (eval mode matters)."""

    def __init__(self):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 8))

    def forward(self, h):
        return self.mlp(h).unsqueeze(0)


class Heads(nn.Module):
    def __init__(self):
        super().__init__()
        self.projector = OneHead()


def test_fields_from_features_leave_the_model_in_train_mode():
    torch.manual_seed(0)
    model = Heads().train()
    h = torch.randn(100, 16)
    fields = collapse_fields(model, h)
    assert model.training
    with torch.no_grad():
        z = model.eval().projector(h)
    assert fields["rankme"] == pytest.approx(numpy_rankme(h.numpy()), rel=1e-4)
    assert fields["proj_std"] == pytest.approx(numpy_proj_std(z.numpy()), rel=1e-6)


def test_untrained_networks_of_every_method_are_far_from_the_thresholds(tmp_path):
    """The untrained network's record (epoch 0) never signals collapse; a collapsed one does, in one line."""
    from ffcv_amcl.config import from_flat, resolve
    from ffcv_amcl.model.methods import METHODS
    from ffcv_amcl.model.ssl import build_model
    from ffcv_amcl.data.digits import load_digits

    x, _ = load_digits("test")
    images = torch.tensor(x[:120]).permute(0, 3, 1, 2).float().div(255).contiguous(memory_format=torch.channels_last)
    features = None
    for method in METHODS:
        torch.manual_seed(0)
        cfg = resolve(from_flat({"model.method": method, "model.stem": "imagenet", "training.batch_size": 32,
                                 "data.train_dataset": "x"}))
        model = build_model(cfg, image_size=32, global_batch=32).eval()
        with torch.no_grad():
            features = model.features(images) if features is None else features      # the same backbone init
        fields = collapse_fields(model, features)
        assert fields["rankme"] > 10 * RANKME_COLLAPSED, method
        assert fields["proj_std"] * np.sqrt(cfg.model.proj_dim) > 5 * PROJ_STD_COLLAPSED, method
        assert collapse_warning(fields, method, cfg.model.proj_dim) is None
    line = collapse_warning({"rankme": 1.0, "proj_std": 1e-5}, "simsiam", 2048)
    assert line.count("\n") == 0 and "RankMe 1.00" in line and "--model.pred_hidden" in line
