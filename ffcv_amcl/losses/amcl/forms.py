"""The AMCL forms as pure functions of similarities and temperatures (docs/amcl.md, "Why `ref` is unbounded"),
and the one declaration of which forms each kind of AMCL loss has.

  ref     the reference code's formulas, exactly (kept to reproduce it; unbounded below: every temperature is
          driven to tau_min);
  hetero  heteroscedastic: phi learns only from the Gaussian negative log-likelihood of the positive pairs with
          the similarity detached, (1 - sg s+)/tau+ + (d/2) log tau+ (optimum tau+ = 2(1 - s+)/d: a harder
          positive gets a higher temperature); the method's own loss uses every temperature detached
          (contrastive: cross-entropy of the positive among itself and the top-k negatives). Bounded below;
  post    posterior: cross-entropy of the positive among itself and the top-k with logits s/tau - beta Omega(tau),
          temperatures trained through it (contrastive losses only). Bounded below by 0.

A form's `terms` maps the loss's similarities and temperatures to its terms: per anchor (contrastive), per
pair (siamese) or per head (Barlow Twins). Its `floor` is the lowest value one term can take for given
(tau_min, nll_dim); the loss multiplies it by how many terms it adds up.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch

from ffcv_amcl.losses.temperature import gaussian_nll, omega

FORMS = ("ref", "hetero", "post")
# Lowest temperature of each form when the config leaves it open: the spec's 1e-5 for ref (kept exact); bounded
# forms at 0.02, below which only positives with s+ > 0.98 would put their optimum (docs/amcl.md, the AMCL study).
FORM_TAU_MIN = {"ref": 1e-5, "hetero": 0.02, "post": 0.02}
DEFAULT_FORM = "hetero"      # the form the study supports (BENCHMARKS.md, AMCL study); config.py's default too
PHI_LEARNS_ALONE = ("hetero",)   # forms whose phi reads detached vectors: only the NLL trains it


class Settings(NamedTuple):
    """The numbers a form reads besides similarities and temperatures."""

    beta: float          # weight of Omega (ref, post)
    dim: int             # D of Omega(tau) = (D/2) log tau + 1/tau: the projection size
    nll_dim: float       # d of the hetero form's Gaussian NLL
    lambd: float = 0.0   # Barlow Twins' off-diagonal weight


class Form(NamedTuple):
    terms: Callable[..., torch.Tensor]
    floor: Callable[[float, float], float]   # (tau_min, nll_dim) -> lowest value of one term
    soft_targets: bool = False               # a softmax over the candidates: ASCL's targets can replace one-hot


def nll_floor(tau_min: float, nll_dim: float) -> float:
    """The lowest value of gaussian_nll over tau >= tau_min for any residual >= 0: (d/2) log tau_min."""
    return 0.5 * nll_dim * math.log(tau_min)


def unbounded(tau_min: float, nll_dim: float) -> float:
    return float("-inf")


def cross_entropy(x_pos: torch.Tensor, x_neg: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of the logits [positive, negatives] (x_pos (...), x_neg (..., k) -> (...)) with the one-hot
    target on the positive, or with `target` (..., 1 + k) summing to 1. Never below 0."""
    logits = torch.cat([x_pos.unsqueeze(-1), x_neg], -1)
    if target is None:
        return torch.logsumexp(logits, -1) - x_pos
    return -(target * torch.log_softmax(logits, -1)).sum(-1)


# ---- contrastive (SimCLR, MoCo, ASCL): per anchor, from its positive (...) and its k chosen negatives (..., k) --

def contrastive_ref(s_pos, tau_pos, s_neg, tau_neg, s: Settings, target=None) -> torch.Tensor:
    """-s+/tau+ + mean_k s_n/tau_n + beta Omega(tau+) - beta sum_k (log tau_n + 1/tau_n)."""
    return (-s_pos / tau_pos + (s_neg / tau_neg).mean(-1)
            + s.beta * omega(tau_pos, s.dim)
            - s.beta * (torch.log(tau_neg) + 1.0 / tau_neg).sum(-1))


def contrastive_hetero(s_pos, tau_pos, s_neg, tau_neg, s: Settings, target=None) -> torch.Tensor:
    """Cross-entropy of s/sg(tau) over [positive, negatives] + the positive's NLL (1 - sg s+)/tau+ + (d/2) log tau+."""
    return (cross_entropy(s_pos / tau_pos.detach(), s_neg / tau_neg.detach(), target)
            + gaussian_nll(1.0 - s_pos.detach(), tau_pos, s.nll_dim))


def contrastive_post(s_pos, tau_pos, s_neg, tau_neg, s: Settings, target=None) -> torch.Tensor:
    """Cross-entropy over [positive, negatives] of the logits s/tau - beta Omega(tau)."""
    x_pos = s_pos / tau_pos - s.beta * omega(tau_pos, s.dim)
    return cross_entropy(x_pos, s_neg / tau_neg - s.beta * omega(tau_neg, s.dim), target)


CONTRASTIVE = {
    "ref": Form(contrastive_ref, unbounded),
    "hetero": Form(contrastive_hetero, nll_floor, soft_targets=True),
    "post": Form(contrastive_post, lambda tau_min, nll_dim: 0.0, soft_targets=True),
}


# ---- siamese (SimSiam, BYOL): per pair (prediction, sg target), both directions -------------------------------

def siamese_ref(sim, tau, s: Settings) -> torch.Tensor:
    """-1/2 s/tau + beta Omega(tau)."""
    return -0.5 * sim / tau + s.beta * omega(tau, s.dim)


def siamese_hetero(sim, tau, s: Settings) -> torch.Tensor:
    """-1/2 s/sg(tau) + 1/2 the pair's NLL (1 - sg s)/tau + (d/2) log tau."""
    return -0.5 * sim / tau.detach() + 0.5 * gaussian_nll(1.0 - sim.detach(), tau, s.nll_dim)


SIAMESE = {
    "ref": Form(siamese_ref, unbounded),
    # -1/2 s/tau >= -1/2 / tau_min (s <= 1), and half an NLL
    "hetero": Form(siamese_hetero, lambda tau_min, nll_dim: -0.5 / tau_min + 0.5 * nll_floor(tau_min, nll_dim)),
}


# ---- Barlow Twins: per head, from the cross-correlation cc and the temperatures t (C, D, D) ------------------

def barlow_ref(cc, t, eye, s: Settings) -> torch.Tensor:
    """sum_l (1 - C_ll/T_ll)^2 + lambd sum_{l!=m} C_lm^2/T_lm + beta sum_l Omega(T_ll) - beta sum_{l!=m} Omega(T_lm)."""
    cd, td = cc.diagonal(dim1=-2, dim2=-1), t.diagonal(dim1=-2, dim2=-1)
    on = ((1.0 - cd / td) ** 2).sum(-1)
    off = (cc.pow(2) / t).masked_fill(eye, 0.0).sum((-2, -1))
    reg = s.beta * (omega(td, s.dim).sum(-1) - omega(t, s.dim).masked_fill(eye, 0.0).sum((-2, -1)))
    return on + s.lambd * off + reg


def barlow_hetero(cc, t, eye, s: Settings) -> torch.Tensor:
    """The Barlow Twins terms over sg(T), plus the NLL of each entry's detached squared error ((1 - C_ll)^2 on the
    diagonal, C_lm^2 off it), which alone trains phi_b."""
    cd, td = cc.diagonal(dim1=-2, dim2=-1), t.diagonal(dim1=-2, dim2=-1)
    on = ((1.0 - cd).pow(2) / td.detach()).sum(-1)
    off = (cc.pow(2) / t.detach()).masked_fill(eye, 0.0).sum((-2, -1))
    residual = torch.where(eye, (1.0 - cc).pow(2), cc.pow(2)).detach()
    reg = gaussian_nll(residual, t, s.nll_dim).sum((-2, -1))
    return on + s.lambd * off + reg


BARLOW = {
    "ref": Form(barlow_ref, unbounded),
    "hetero": Form(barlow_hetero, nll_floor),     # one NLL per entry of the D x D matrix, the rest >= 0
}
