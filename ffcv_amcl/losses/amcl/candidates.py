"""Each anchor's positive and hardest negatives, for every head at once: what every contrastive AMCL form reads.

All C heads are one batched computation: vectors are L2-normalised, phi runs once per vector (C*N rows; the pair
logit <phi(u), phi(v)> factorises, so the logits of all pairs are one more batched product), the similarities of
each anchor with its candidate negatives are one batched product (einsum 'cid,cjd->cij', run as bmm), and the k
hardest negatives are one top-k chosen on similarity only (no gradient through the choice). No loop over heads.
The matrices of all pairs are the large tensors here ((C, N, N) in the batch, (C, N, K) against a queue): each is
freed as soon as its chosen entries are picked, and nothing of that size is kept for the backward.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

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
            s_key = torch.bmm(pos, neg.transpose(1, 2)).gather(-1, idx)
    return Candidates(s_pos, a_pos, pick(s_all, idx), pick(a_all, idx), s_key)


def _against(neg: torch.Tensor, extra: torch.Tensor | None, z: torch.Tensor, p: torch.Tensor, phi: nn.Module,
             topk: int):
    """(similarities, temperature logits, top-k positions) of each anchor z (phi outputs p) against the shared
    negatives neg (C, K, D), normalised, and its own extra negatives (C, N, S, D), normalised and detached here."""
    pn = phi(neg)
    s_all = torch.bmm(z, neg.transpose(1, 2))                             # einsum('cid,ckd->cik')
    a_all = torch.bmm(p, pn.transpose(1, 2))
    if extra is not None:
        ex = _unit(extra.detach(), z.dtype)                               # (C, N, S, D)
        s_all = torch.cat([s_all, torch.einsum("cid,cisd->cis", z, ex)], -1)
        a_all = torch.cat([a_all, torch.einsum("cid,cisd->cis", p, phi(ex))], -1)
    with torch.no_grad():
        idx = s_all.detach().topk(min(topk, s_all.shape[-1]), dim=-1).indices
    return s_all, a_all, idx


def _in_batch(z: torch.Tensor, p: torch.Tensor, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(similarities, temperature logits) (C, N, k) of each anchor's k hardest negatives among the other anchors
    of the batch (not itself, not its positive at offset N/2). The (2C, N, N) products of all pairs live only
    until their chosen entries are picked."""
    C, n = z.shape[0], z.shape[1]
    both = _Gram.apply(z, z.transpose(1, 2), p, p.transpose(1, 2))      # [z z^T; p p^T]: <phi(u), phi(v)> below
    half = n // 2
    with torch.no_grad():
        excluded = both[:C].detach()                                    # in place: only `pick` reads it
        for offset in (0, half, -half):                                 # self and positive are not negatives
            excluded.diagonal(offset, dim1=-2, dim2=-1).fill_(float("-inf"))
        idx = excluded.topk(min(topk, n - 2), dim=-1).indices
    chosen = pick(both, idx.repeat(2, 1, 1))
    return chosen[:C], chosen[C:]


class _Gram(torch.autograd.Function):
    """bmm(x1, y1t) and bmm(x2, y2t) of the same shapes as one batched product of 2C items, stacked (2C, N, M).

    MKL's batched gemm gives each thread whole items: C heads on an even number of threads leave one idle for a
    head when C is odd, 2C items do not. Values and gradients are those of the two bmm calls (the same gemm per
    item), and the gradients reach x1, y1t, x2, y2t as they would from them."""

    @staticmethod
    def forward(ctx, x1, y1t, x2, y2t):
        x, y = torch.cat([x1, x2]), torch.cat([y1t.transpose(1, 2), y2t.transpose(1, 2)])
        ctx.save_for_backward(x, y)
        return torch.bmm(x, y.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad):
        x, y = ctx.saved_tensors
        C = x.shape[0] // 2
        gx, gyt = grad.bmm(y), x.transpose(1, 2).bmm(grad)
        return gx[:C], gyt[:C], gx[C:], gyt[C:]


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
