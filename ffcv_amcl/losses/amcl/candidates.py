"""Each anchor's positive and hardest negatives, for every head at once: what every contrastive AMCL form reads.

All C heads are one batched computation: vectors are L2-normalised, phi runs once per vector (C*N rows; the pair
logit <phi(u), phi(v)> factorises, so the logits of all pairs are one more batched product), the similarities of
each anchor with its candidate negatives are one batched product (einsum 'cid,cjd->cij'; losses.pairs, which on a
CPU whose threads the heads do not divide runs one 2-D gemm per head), and the k hardest negatives are one top-k
chosen on similarity only (no gradient through the choice). Nothing else loops over heads.
The matrices of all pairs are the large tensors here ((C, N, N) in the batch, (C, N, K) against a queue): each is
freed as soon as its chosen entries are picked, and nothing of that size is kept for the backward.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ffcv_amcl.losses.pairs import pair_products
from ffcv_amcl.losses.temperature import work_dtype


class Candidates(NamedTuple):
    """Per head c and anchor i: the positive (C, N) and the k chosen negatives (C, N, k), hardest first."""

    s_pos: torch.Tensor                   # cosine similarity of anchor and positive
    a_pos: torch.Tensor                   # <phi(anchor), phi(positive)>: the positive's temperature logit
    s_neg: torch.Tensor                   # cosine similarities of the chosen negatives
    a_neg: torch.Tensor                   # their temperature logits
    s_key: torch.Tensor | None = None     # (key_similarities) positive-to-chosen-negative similarities, no gradient


def _unit(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return F.normalize(x.to(dtype), dim=-1)


def select(phi: nn.Module, anchors: torch.Tensor, topk: int, *, positives: torch.Tensor | None = None,
           negatives: torch.Tensor | None = None, extra: torch.Tensor | None = None,
           phi_input: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
           key_similarities: bool = False) -> Candidates:
    """anchors (C, N, D), any scale. positives (C, N, D): the anchors' positives (detached here); None: the other
    view, the anchors being [view a; view b] (the positive of row i is row (i + N/2) mod N). negatives (C, K, D):
    every anchor's candidates (each head's queue; detached here); None: the other anchors of the batch, without
    the anchor itself and its positive. extra (C, N, S, D): per-anchor candidates besides `negatives` (MoCHi's;
    detached here). k = min(topk, number of candidates). phi_input: what phi reads of the normalised anchors
    (the hetero form detaches them). key_similarities: also the positives' similarities to the chosen negatives
    (ASCL's soft targets; needs `negatives`)."""
    if key_similarities and negatives is None:
        raise ValueError("candidates.select: key_similarities needs the shared negatives")
    dt = work_dtype(phi)
    z = _unit(anchors, dt)
    p = phi(phi_input(z))                                                 # phi once on all C*N anchor rows
    if negatives is None:
        s_neg, a_neg = _in_batch(z, p, topk)
    if positives is None:
        half = z.shape[1] // 2
        pos, ppos = z.roll(half, 1), p.roll(half, 1)
    else:
        pos = _unit(positives.detach(), dt)
        ppos = phi(pos)
    s_pos, a_pos = (z * pos).sum(-1), (p * ppos).sum(-1)
    if negatives is None:
        return Candidates(s_pos, a_pos, s_neg, a_neg)
    neg = _unit(negatives.detach(), dt)
    s_all, a_all, idx = _against(neg, extra, z, p, phi, topk)
    s_key = None
    if key_similarities:
        with torch.no_grad():
            s_key = pair_products(pos, neg).gather(-1, idx)
    return Candidates(s_pos, a_pos, pick(s_all, idx), pick(a_all, idx), s_key)


def _against(neg: torch.Tensor, extra: torch.Tensor | None, z: torch.Tensor, p: torch.Tensor, phi: nn.Module,
             topk: int):
    """(similarities, temperature logits, top-k positions) of each anchor z (phi outputs p) against the shared
    negatives neg (C, K, D), normalised, and its own extra negatives (C, N, S, D), normalised and detached here."""
    pn = phi(neg)
    s_all = pair_products(z, neg)                                         # einsum('cid,ckd->cik')
    a_all = pair_products(p, pn)
    if extra is not None:
        ex = _unit(extra.detach(), z.dtype)                               # (C, N, S, D)
        s_all = torch.cat([s_all, torch.einsum("cid,cisd->cis", z, ex)], -1)
        a_all = torch.cat([a_all, torch.einsum("cid,cisd->cis", p, phi(ex))], -1)
    with torch.no_grad():
        idx = s_all.detach().topk(min(topk, s_all.shape[-1]), dim=-1).indices
    return s_all, a_all, idx


def _in_batch(z: torch.Tensor, p: torch.Tensor, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(similarities, temperature logits) (C, N, k) of each anchor's k hardest negatives among the other anchors
    of the batch (not itself, not its positive at offset N/2). Each (C, N, N) matrix of all pairs lives only
    until its chosen entries are picked."""
    s_neg, idx = hardest(pair_products(z, z), min(topk, z.shape[1] - 2))
    return s_neg, pick(pair_products(p, p), idx)                           # <phi(u), phi(v)> of the chosen pairs


def hardest(s_all: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(the k largest similarities of each row of s_all (..., N, N) but the row's anchor and its positive at
    offset N/2, their positions). The excluded entries are overwritten in s_all: nothing else reads it."""
    half = s_all.shape[-1] // 2
    with torch.no_grad():
        excluded = s_all.detach()
        for offset in (0, half, -half):
            excluded.diagonal(offset, dim1=-2, dim2=-1).fill_(float("-inf"))
        idx = excluded.topk(k, dim=-1).indices
    return pick(s_all, idx), idx


class _Pick(torch.autograd.Function):
    """x.gather(-1, index), keeping for the backward only the index and x's shape (not x itself)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index)
        ctx.shape = x.shape
        return x.gather(-1, index)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        index, = ctx.saved_tensors
        return grad.new_zeros(ctx.shape).scatter_add_(-1, index, grad), None


def pick(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The entries of x (..., M) at index (..., k) along the last axis, with gather's values and gradient; x is
    not kept for the backward, so a large similarity matrix is freed as soon as its chosen entries are read."""
    return _Pick.apply(x, index)
