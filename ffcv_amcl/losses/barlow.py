"""Barlow Twins' redundancy-reduction loss, per head on batch-standardised projections, summed over heads."""
from __future__ import annotations

import torch

from ffcv_amcl.losses import checks
from ffcv_amcl.losses.precision import full_precision, wide


def cross_correlation(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(C, D, D) cross-correlation x_hat^T y_hat / B of per-head projections (C, B, D) standardised over the
    batch with the unbiased std (torch.std), the same for the baseline and for AMCL."""
    xh = (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True)
    yh = (y - y.mean(1, keepdim=True)) / y.std(1, keepdim=True)
    return torch.einsum("cbl,cbm->clm", xh, yh) / x.shape[1]


def barlow_twins(za: torch.Tensor, zb: torch.Tensor, lambd: float = 5e-3, *, validate: bool = True) -> torch.Tensor:
    """sum_l (1 - C_ll)^2 + lambd sum_{l!=m} C_lm^2 with C = x^T y / B of the standardised (unbiased std)
    projections, the same standardisation as AMCLBarlowTwins; za, zb (C, B, D)."""
    lambd = checks.non_negative("barlow_twins", "lambd", lambd)
    checks.inputs("barlow_twins", validate, za=za, zb=zb)
    with full_precision(za):
        x, y = wide(za), wide(zb).to(wide(za).dtype)
        cc = cross_correlation(x, y)
        diag = cc.diagonal(dim1=-2, dim2=-1)
        on = (1.0 - diag).pow(2).sum(-1)
        off = cc.pow(2).sum((-2, -1)) - diag.pow(2).sum(-1)
        return (on + lambd * off).sum()
