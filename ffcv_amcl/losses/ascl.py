"""ASCL adaptive soft targets (Feng & Patras, ICPR 2022): InfoNCE whose target spreads mass over
the key's neighbours in the queue, weighted by how confident (low-entropy) that neighbourhood is.

    p = softmax(k Q^T / t2);  c = 1 - H(p) / log|Q|;  w = min(K c p, 1)           ("ascl")
    w = c on the top-K of p, else 0                                              ("ahcl")
    w = 1 on the top-K of p, else 0                                              ("hard")
    target = [1, w] / sum;  loss = -sum target * log_softmax([q.k, q.Q^T] / t1)
With K = 0 every variant is MoCo's InfoNCE at temperature t1.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ffcv_amcl.errors import UserError
from ffcv_amcl.losses import checks
from ffcv_amcl.losses.moco import as_heads
from ffcv_amcl.losses.pairs import pair_products
from ffcv_amcl.losses.precision import full_precision, wide

VARIANTS = ("ascl", "ahcl", "hard")


@torch.no_grad()
def soft_targets(k: torch.Tensor, queue: torch.Tensor, K: float, t2: float, variant: str) -> torch.Tensor:
    """Targets over [positive, queue] from normalised keys (C, B, D) and queue (C, Q, D): (C, B, 1 + Q)."""
    return targets_from_similarities(pair_products(k, queue), K, t2, variant)


@torch.no_grad()
def targets_from_similarities(sims: torch.Tensor, K: float, t2: float, variant: str) -> torch.Tensor:
    """Targets over [positive, candidates] from the cosine similarities (C, B, n) of each key with its n candidate
    negatives (the whole queue, or AMCL's top-k of each anchor): (C, B, 1 + n); confidence 1 - H / log n."""
    log_p = torch.log_softmax(sims / t2, dim=-1)
    p = log_p.exp()
    conf = 1.0 + (p * log_p).sum(-1, keepdim=True) / math.log(sims.shape[-1])    # 1 - H / log n
    if variant == "ascl":
        w = torch.clamp(K * conf * p, max=1.0)
    else:
        top = p.topk(int(K), dim=-1).indices
        value = conf.expand_as(top) if variant == "ahcl" else torch.ones_like(top, dtype=p.dtype)
        w = torch.zeros_like(p).scatter(-1, top, value)
    target = torch.cat([torch.ones_like(p[..., :1]), w], -1)
    return target / target.sum(-1, keepdim=True)


def ascl_loss(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, K: float = 5, t1: float = 0.1,
              t2: float = 0.05, variant: str = "ascl", *, validate: bool = True) -> torch.Tensor:
    """q queries, k keys (no gradient), queue negatives: (B, D), (B, D), (K_q, D), or per head (C, B, D),
    (C, B, D), (C, K_q, D) with a soft target per head. Mean over the batch, summed over heads.

    K: the scale of the soft weights ("ascl", any number >= 0) or the number of neighbours ("ahcl", "hard",
    an integer <= queue size).
    """
    owner = "ascl_loss"
    if variant not in VARIANTS:
        raise UserError(f"{owner}: unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    q3, k3, queue3, _ = as_heads(owner, q, k, queue)
    K = checks.non_negative(owner, "K", K)
    t1 = checks.positive(owner, "t1", t1)
    t2 = checks.positive(owner, "t2", t2)
    n = queue3.shape[1]
    if variant != "ascl" and (K != int(K) or K > n):
        raise UserError(f"{owner}: K={K!r} must be a whole number of neighbours <= the queue size {n} "
                        f"for variant {variant!r}")
    if n < 2:
        raise UserError(f"{owner}: the queue holds {n} negative; the confidence 1 - H/log|Q| needs at least 2; "
                        "use a longer queue")
    if validate:
        checks.finite(owner, {"q": q, "k": k, "queue": queue})
    with full_precision(q3):
        qn = F.normalize(wide(q3), dim=-1)
        kn = F.normalize(wide(k3).detach().to(qn.dtype), dim=-1)
        negs = F.normalize(wide(queue3).detach().to(qn.dtype), dim=-1)
        target = soft_targets(kn, negs, K, t2, variant)
        logits = torch.cat([(qn * kn).sum(-1, keepdim=True), pair_products(qn, negs)], -1) / t1
        return -(target * torch.log_softmax(logits, -1)).sum(-1).mean(-1).sum()
