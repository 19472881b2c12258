"""MoCo's InfoNCE against a queue of negatives (one queue per head), one direction; the caller symmetrises."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ffcv_amcl.errors import UserError
from ffcv_amcl.losses import checks
from ffcv_amcl.losses.pairs import pair_products
from ffcv_amcl.losses.precision import full_precision, wide


def as_heads(owner: str, q: torch.Tensor, k: torch.Tensor | None, queue: torch.Tensor):
    """Accept (B, D)/(K, D) single-head or (C, B, D)/(C, K, D) stacks; return 3-D views and whether 2-D came in."""
    checks.tensor(owner, "q", q, (2, 3))
    named = {"q": q} if k is None else {"q": q, "k": k}
    checks.views(owner, named, min_batch=1, ndims=(q.dim(),))
    checks.tensor(owner, "queue", queue, (q.dim(),))
    single = q.dim() == 2
    q3, queue3 = (q.unsqueeze(0), queue.unsqueeze(0)) if single else (q, queue)
    if queue3.shape[0] != q3.shape[0] or queue3.shape[2] != q3.shape[2] or queue3.shape[1] < 1:
        raise UserError(f"{owner}: queue has shape {tuple(queue.shape)} but q has {tuple(q.shape)}; the queue must be "
                        f"{'(K>=1, dim)' if single else '(heads, K>=1, dim)'} with the same heads and dim as q")
    k3 = None if k is None else (k.unsqueeze(0) if single else k)
    return q3, k3, queue3, single


def info_nce_queue(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.1, *,
                   extra_negatives: torch.Tensor | None = None, validate: bool = True) -> torch.Tensor:
    """q anchors, k positives (detached by the caller), queue negatives; logits [q.k, q.Q^T, q.E^T] / T.

    Shapes (C, B, D), (C, B, D), (C, K, D); (B, D), (B, D), (K, D) is read as one head. Inputs are normalised here.
    extra_negatives: optional (C, B, S, D) per-query negatives (MoCHi), appended after the queue logits.
    Returns the cross-entropy with target 0, mean over the batch, summed over heads.
    """
    owner = "info_nce_queue"
    q3, k3, queue3, single = as_heads(owner, q, k, queue)
    t = checks.positive(owner, "temperature", temperature)
    named = {"q": q, "k": k, "queue": queue}
    if extra_negatives is not None:
        checks.tensor(owner, "extra_negatives", extra_negatives, (q.dim() + 1,))
        ex = extra_negatives.unsqueeze(0) if single else extra_negatives
        if ex.shape[:2] != q3.shape[:2] or ex.shape[3] != q3.shape[2]:
            raise UserError(f"{owner}: extra_negatives has shape {tuple(extra_negatives.shape)} but must be "
                            f"{tuple(q.shape[:-1])} + (S, {q.shape[-1]}): S negatives per query")
        named["extra_negatives"] = extra_negatives
    if validate:
        checks.finite(owner, named)
    with full_precision(q3):
        qn = F.normalize(wide(q3), dim=-1)
        kn = F.normalize(wide(k3).to(qn.dtype), dim=-1)
        negs = F.normalize(wide(queue3).to(qn.dtype), dim=-1)
        parts = [(qn * kn).sum(-1, keepdim=True), pair_products(qn, negs)]
        if extra_negatives is not None:
            exn = F.normalize(wide(ex).to(qn.dtype), dim=-1)
            parts.append(torch.einsum("cbd,cbsd->cbs", qn, exn))
        logits = torch.cat(parts, -1) / t                                       # (C, B, 1 + K [+ S])
        return -torch.log_softmax(logits, -1)[..., 0].mean(-1).sum()
