"""MoCHi hard-negative mixing (Kalantidis et al., NeurIPS 2020): synthetic negatives per query.

Type 1 mixes two of the query's n_hard hardest queue negatives, type 2 mixes the (detached) query into one.
They are normalised, detached and only ever join the logits: nothing synthetic enters the queue.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ffcv_amcl.errors import UserError
from ffcv_amcl.losses import checks
from ffcv_amcl.losses.moco import as_heads
from ffcv_amcl.losses.precision import full_precision, wide


def _count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"mix_hard_negatives: {name}={value!r} must be an integer >= 0 (0 switches that type off)")
    return value


@torch.no_grad()
def mix_hard_negatives(q: torch.Tensor, queue: torch.Tensor, n_hard: int, s1: int, s2: int,
                       generator: torch.Generator | None = None, *, validate: bool = True) -> torch.Tensor:
    """q (B, D) queries and queue (K, D) -> (B, s1 + s2, D); or per head (C, B, D), (C, K, D) -> (C, B, s1 + s2, D).

    Type 1 (first s1): normalize(a n_i + (1 - a) n_j), a ~ U(0, 1), i != j drawn from the query's n_hard most
    similar queue members (i == j only when n_hard == 1). Type 2 (last s2): normalize(b q + (1 - b) n_i),
    b ~ U(0, 0.5). Random draws come from `generator` (on its own device) for reproducibility.
    """
    owner = "mix_hard_negatives"
    q3, _, queue3, single = as_heads(owner, q, None, queue)
    s1, s2 = _count("s1", s1), _count("s2", s2)
    if isinstance(n_hard, bool) or not isinstance(n_hard, int) or n_hard < 1:
        raise UserError(f"{owner}: n_hard={n_hard!r} must be an integer >= 1")
    K = queue3.shape[1]
    if n_hard > K:
        raise UserError(f"{owner}: n_hard={n_hard} is larger than the queue ({K} negatives); "
                        f"use n_hard <= {K} or a longer queue")
    if validate:
        checks.finite(owner, {"q": q, "queue": queue})
    C, B, D = q3.shape
    with full_precision(q3):
        qn = F.normalize(wide(q3), dim=-1)
        negs = F.normalize(wide(queue3).to(qn.dtype), dim=-1)
        hard = torch.einsum("cbd,ckd->cbk", qn, negs).topk(n_hard, dim=-1).indices     # (C, B, n_hard)
        dev = generator.device if generator is not None else q3.device

        def members(pos: torch.Tensor) -> torch.Tensor:
            """Queue vectors (C, B, n, D) at positions pos (C, B, n) of each query's hard set."""
            n = pos.shape[-1]
            idx = hard.gather(-1, pos).reshape(C, B * n, 1).expand(-1, -1, D)
            return negs.gather(1, idx).view(C, B, n, D)

        def positions(count: int, low: int = 0) -> torch.Tensor:
            return torch.randint(low, n_hard, (C, B, count), generator=generator, device=dev).to(q3.device)

        def uniform(count: int, high: float) -> torch.Tensor:
            u = torch.rand((C, B, count, 1), generator=generator, device=dev, dtype=qn.dtype)
            return (u * high).to(q3.device)

        out = []
        if s1:
            pos = positions(s1)
            # a second, different member (shift by 1..n_hard-1); the same one only when n_hard == 1
            other = (pos + positions(s1, low=1)) % n_hard if n_hard > 1 else pos
            a = uniform(s1, 1.0)
            out.append(F.normalize(a * members(pos) + (1 - a) * members(other), dim=-1))
        if s2:
            b = uniform(s2, 0.5)
            out.append(F.normalize(b * qn.unsqueeze(2) + (1 - b) * members(positions(s2)), dim=-1))
        mixed = torch.cat(out, 2) if out else qn.new_zeros((C, B, 0, D))
    return mixed[0] if single else mixed
