"""The parts a MoCo run composes, each chosen once at construction (`objective`, `negatives_mixing`):

  objective  which images are queries and keys, and the loss of the queries against the keys and the queue:
             InfoNCE or AMCL (symmetrised: queries from both views, each against the other view's key), or
             ASCL's soft targets, plain or over AMCL's candidates (one direction: the query from view a, the key
             from view b, which may be weakly augmented via data.augs_b);
  mixing     the extra negatives of each query: none, or MoCHi's synthetic hard negatives (after
             `loss.mochi_start` epochs; never enqueued).
"""
from __future__ import annotations

import torch

from ffcv_amcl import distributed as dist
from ffcv_amcl.losses import ascl_loss, info_nce_queue, mix_hard_negatives
from ffcv_amcl.losses.amcl import AMCLContrastive


class Symmetric:
    """Queries and keys from both views, [view a; view b]: the query of one view meets the key of the other."""

    def views(self, view_a: torch.Tensor, view_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([view_a, view_b])
        return x, x


class OneWay:
    """ASCL's direction: queries from view a, keys from view b."""

    def views(self, view_a: torch.Tensor, view_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return view_a, view_b


class InfoNCE(Symmetric):
    """MoCo v2's InfoNCE at a fixed temperature, averaged over the two directions."""

    def __init__(self, temperature: float):
        self.temperature = temperature

    def __call__(self, q, k, queue, extra=None):
        B = q.shape[1] // 2
        ea, eb = (None, None) if extra is None else (extra[:, :B], extra[:, B:])
        t = self.temperature
        return 0.5 * (info_nce_queue(q[:, :B], k[:, B:], queue, t, extra_negatives=ea, validate=False)
                      + info_nce_queue(q[:, B:], k[:, :B], queue, t, extra_negatives=eb, validate=False))


class AMCLQueue(Symmetric):
    """AMCL with each head's queue as negatives (both directions in one call)."""

    def __init__(self, criterion: AMCLContrastive):
        self.criterion = criterion

    def __call__(self, q, k, queue, extra=None):
        B = q.shape[1] // 2
        return self.criterion(q[:, :B], q[:, B:], queue, keys=(k[:, :B], k[:, B:]), extra_negatives=extra)


class SoftTargets(OneWay):
    """ASCL: InfoNCE at t1 whose target spreads over the key's confident neighbours in the queue."""

    def __init__(self, l):
        self.K, self.t1, self.t2, self.variant = l.ascl_k, l.ascl_t1, l.ascl_t2, l.ascl_variant

    def __call__(self, q, k, queue, extra=None):
        return ascl_loss(q, k, queue, K=self.K, t1=self.t1, t2=self.t2, variant=self.variant, validate=False)


class AMCLSoftTargets(OneWay):
    """ASCL's soft targets over each query's positive and its top-k AMCL candidates (hetero and post forms)."""

    def __init__(self, criterion: AMCLContrastive, l):
        self.criterion = criterion
        self.K, self.t2, self.variant = l.ascl_k, l.ascl_t2, l.ascl_variant

    def __call__(self, q, k, queue, extra=None):
        return self.criterion.forward_soft(q, k, queue, K=self.K, t2=self.t2, variant=self.variant)


def objective(l, criterion: AMCLContrastive | None):
    """The objective the loss settings `l` describe; criterion: the AMCL loss, None when AMCL is off."""
    if l.ascl:
        return SoftTargets(l) if criterion is None else AMCLSoftTargets(criterion, l)
    return InfoNCE(l.temperature) if criterion is None else AMCLQueue(criterion)


class NoMixing:
    def __call__(self, q, queue, *, step: int, epoch: int) -> None:
        return None


class HardNegativeMixing:
    """MoCHi's synthetic negatives for queries q (C, N, D), (C, N, s1 + s2, D), or None before the warm-up ends.
    Seeded by (seed, step, rank): reproducible, and a resumed run draws what the uninterrupted one drew."""

    def __init__(self, l, seed: int):
        self.n_hard, self.s1, self.s2 = l.mochi_n_hard, l.mochi_s1, l.mochi_s2
        self.start, self.seed = l.mochi_start, seed

    def __call__(self, q, queue, *, step: int, epoch: int) -> torch.Tensor | None:
        if epoch < self.start:
            return None
        g = torch.Generator(device=q.device).manual_seed((self.seed * 1_000_003 + step) * 131 + dist.rank())
        return mix_hard_negatives(q.detach(), queue, self.n_hard, self.s1, self.s2, generator=g, validate=False)


def negatives_mixing(l, seed: int):
    """MoCHi's mixing when loss.mochi_n_hard > 0, else none."""
    return HardNegativeMixing(l, seed) if l.mochi_n_hard > 0 else NoMixing()
