"""VICReg (Bardes et al. 2022): invariance, variance and covariance terms per head, summed over heads."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ffcv_amcl.losses import checks
from ffcv_amcl.losses.precision import full_precision, wide


def _variance_term(z: torch.Tensor, eps: float) -> torch.Tensor:
    """(C,) mean over dimensions of relu(1 - sqrt(Var + eps)), Var unbiased over the batch."""
    return torch.relu(1.0 - torch.sqrt(z.var(1) + eps)).mean(-1)


def _covariance_term(z: torch.Tensor) -> torch.Tensor:
    """(C,) sum of the squared off-diagonal entries of the unbiased covariance, over D."""
    B, D = z.shape[1], z.shape[2]
    zc = z - z.mean(1, keepdim=True)
    cov = torch.einsum("cbi,cbj->cij", zc, zc) / (B - 1)
    return (cov.pow(2).sum((-2, -1)) - cov.diagonal(dim1=-2, dim2=-1).pow(2).sum(-1)) / D


def vicreg_loss(za: torch.Tensor, zb: torch.Tensor, *, sim_weight: float = 25.0, var_weight: float = 25.0,
                cov_weight: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """sim_weight * MSE(za, zb) + var_weight * (v(za) + v(zb)) / 2 + cov_weight * (c(za) + c(zb)) per head,
    summed over heads; za, zb (C, B, D), the expander's outputs of the two views (the global batch under DDP).
    Checks its inputs (finite values included: one host sync); `vicreg_terms` is the same loss unchecked."""
    for name, value in (("sim_weight", sim_weight), ("var_weight", var_weight), ("cov_weight", cov_weight)):
        checks.non_negative("vicreg_loss", name, value)
    eps = checks.positive("vicreg_loss", "eps", eps)
    checks.inputs("vicreg_loss", True, za=za, zb=zb)
    return vicreg_terms(za, zb, sim_weight=sim_weight, var_weight=var_weight, cov_weight=cov_weight, eps=eps)


def vicreg_terms(za: torch.Tensor, zb: torch.Tensor, *, sim_weight: float, var_weight: float, cov_weight: float,
                 eps: float) -> torch.Tensor:
    """vicreg_loss without the checks: the method's path, whose settings the config checked."""
    with full_precision(za):
        x, y = wide(za), wide(zb).to(wide(za).dtype)
        invariance = F.mse_loss(x, y, reduction="none").mean((1, 2))
        variance = 0.5 * (_variance_term(x, eps) + _variance_term(y, eps))
        covariance = _covariance_term(x) + _covariance_term(y)
        return (sim_weight * invariance + var_weight * variance + cov_weight * covariance).sum()
