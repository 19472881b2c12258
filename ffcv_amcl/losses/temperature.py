"""AMCL's pair temperature tau(u, v) and its regulariser Omega (docs/amcl.md, "The formulation").

tau(u, v) = tau_min + (tau_max - tau_min) * sigmoid(-<phi(u), phi(v)>). The inner product factorises, so phi
runs once per vector and the temperatures of all pairs come from one einsum of the phi outputs.
With tau_min = 1e-5, 1/tau reaches 1e5: everything here runs in float32 (or float64) with autocast off.
"""
from __future__ import annotations

import torch
from torch import nn


def make_phi(in_dim: int, hidden: int) -> nn.Sequential:
    """phi: Linear(in, hidden) -> ReLU -> Linear(hidden, in), shared by all heads."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, in_dim))


def work_dtype(module: nn.Module) -> torch.dtype:
    """The dtype of phi's weights (float32 normally, float64 in reference tests)."""
    return next(module.parameters()).dtype


def pair_tau(logit: torch.Tensor, tau_min: float, tau_max: float) -> torch.Tensor:
    """Temperature from <phi(u), phi(v)>."""
    return tau_min + (tau_max - tau_min) * torch.sigmoid(-logit)


def omega(tau: torch.Tensor, dim: int) -> torch.Tensor:
    """Omega(tau) = (D/2) log tau + 1/tau (Gaussian negative log-likelihood normaliser)."""
    return 0.5 * dim * torch.log(tau) + 1.0 / tau


def gaussian_nll(residual: torch.Tensor, tau: torch.Tensor, dim: float) -> torch.Tensor:
    """residual / tau + (dim / 2) log tau: the negative log-likelihood (up to a constant) of an observation whose
    squared error is `residual` (e.g. 1 - s = |u - v|^2 / 2 for unit u, v) under an isotropic Gaussian of variance
    tau in `dim` dimensions. Its minimum over tau is at tau = 2 residual / dim, where it equals
    (dim / 2)(1 + log(2 residual / dim)); for tau >= tau_min it is never below (dim / 2) log tau_min."""
    return residual / tau + 0.5 * dim * torch.log(tau)
