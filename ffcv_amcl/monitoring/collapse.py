"""Collapse monitors: has the representation collapsed onto a point or a few directions?

Computed at every kNN epoch from the backbone features the kNN monitor already extracted (the training split, eval
mode; at most MAX_SAMPLES images, evenly spaced), so they cost no extra pass over the data:

  rankme    the effective rank of the backbone features (Garrido et al. 2023, RankMe): the singular values s of
            the (N, F) feature matrix, p = s / ||s||_1 + eps, exp(-sum p log p). Between 1 (every image has the
            same direction) and min(N, F).
  proj_std  the mean over heads and dimensions of the per-dimension standard deviation (over the images) of the
            L2-normalised projections of those features. About 1/sqrt(D) for projections spread over the sphere,
            0 when every image projects to the same point.

A run has collapsed when rankme falls below RANKME_COLLAPSED or proj_std below PROJ_STD_COLLAPSED / sqrt(D). The
untrained network already sits far from both (ResNet-18 on digits: rankme about 58, proj_std about 0.17 / sqrt(D)
for every method), and so does every healthy training measured (docs: README "Collapse monitors").
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ffcv_amcl.monitoring.names import PROJ_STD, RANKME

MAX_SAMPLES = 25_600         # RankMe's own sample size; more images change the estimate little and cost an (N, F) pass
EPS = 1e-7                   # RankMe's epsilon
RANKME_COLLAPSED = 2.0       # below: the features span about one direction
PROJ_STD_COLLAPSED = 0.02    # times 1/sqrt(D), below: the projections sit on about one point


def rankme(features: torch.Tensor) -> float:
    """RankMe of an (N, F) matrix. The singular values come from the eigenvalues of its smaller Gram matrix (in
    float64), which costs N * min(N, F)^2 rather than a full SVD; a zero matrix gives 1."""
    f = features.double()
    gram = f.T @ f if f.shape[0] >= f.shape[1] else f @ f.T
    s = torch.linalg.eigvalsh(gram).clamp(min=0).sqrt()
    p = s / s.sum().clamp(min=torch.finfo(torch.float64).tiny) + EPS
    return float(torch.exp(-(p * p.log()).sum()))


def proj_std(projections: torch.Tensor) -> float:
    """Mean over heads and dimensions of the per-dimension std over images of the L2-normalised (C, N, D)
    projections."""
    z = F.normalize(projections.double(), dim=-1)
    return float(z.std(dim=1).mean())


def spaced_rows(features: torch.Tensor, limit: int = MAX_SAMPLES) -> torch.Tensor:
    """At most `limit` rows of `features`, evenly spaced (the loader's order is the dataset's, often by class)."""
    n = features.shape[0]
    if n <= limit:
        return features
    return features[torch.linspace(0, n - 1, limit, device=features.device).round().long()]


@torch.no_grad()
def collapse_fields(model, features: torch.Tensor) -> dict:
    """{rankme, proj_std} of backbone features (N, F) and their projections by `model`'s heads (eval mode)."""
    if features.numel() == 0:
        return {}
    h = spaced_rows(features)
    was_training = model.training
    model.eval()
    try:
        z = model.projector(h.to(next(model.projector.parameters()).dtype))
    finally:
        model.train(was_training)
    return {RANKME: rankme(h), PROJ_STD: proj_std(z)}


def collapse_signs(record: dict, proj_dim: int) -> list[str]:
    """The collapse signs `record` shows, in words ([] for a healthy record or one without the monitors)."""
    signs = []
    r, s = record.get(RANKME), record.get(PROJ_STD)
    if isinstance(r, (int, float)) and r < RANKME_COLLAPSED:
        signs.append(f"RankMe {r:.2f} (below {RANKME_COLLAPSED:g}: the features span about one direction)")
    healthy = 1 / math.sqrt(max(proj_dim, 1))
    if isinstance(s, (int, float)) and s < PROJ_STD_COLLAPSED * healthy:
        signs.append(f"proj_std {s:.2g} (healthy about 1/sqrt({proj_dim}) = {healthy:.3f}; below "
                     f"{PROJ_STD_COLLAPSED * healthy:.2g}: every image projects to about one point)")
    return signs


def collapsed(record: dict, proj_dim: int) -> bool:
    return bool(collapse_signs(record, proj_dim))


def collapse_warning(record: dict, method: str, proj_dim: int) -> str | None:
    """One line naming the collapse signs and the settings to look at; None for a healthy record."""
    signs = collapse_signs(record, proj_dim)
    if not signs:
        return None
    settings = "--training.lr, --training.weight_decay, --training.warmup_epochs"
    if method in ("simsiam", "byol"):
        settings += ", the predictor (--model.pred_hidden) and, for BYOL, --loss.momentum"
    else:
        settings += ", --loss.temperature"
    return f"the representation has collapsed: {'; '.join(signs)}; look at {settings}"
