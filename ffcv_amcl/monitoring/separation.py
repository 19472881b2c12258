"""Separation of positive and negative pairs: do a head's positive-pair similarities stay above the negatives'?

The paper's Figure 1: with more augmentation families a single head's positive pairs drift down into the
negatives; several AMCL heads keep them apart. Measured each epoch, per head, from the projections each training
step already has (StepOutput.projections: the online projections (C, N, D) of the views in the loss, ordered
[views a; views b], N = 2B): after L2 normalisation the positives are the pairs (a_i, b_i) and the negatives the
pairs (a_i, b_j), j != i, of the same step. Their cosine similarities are histogrammed on the device (BINS bins on
[-1, 1]; no host sync per step) and at the end of the epoch give

  pos_neg_overlap_head{c}  the overlap coefficient sum_k min(p+_k, p-_k), each histogram normalised to sum 1:
                           0 when the two never share a bin, 1 when they coincide;
  pos_below_half_head{c}   the share of positive pairs with similarity below 0.5 (counted exactly, not binned).

`SeparationMonitor` runs it on every run, baselines and AMCL alike (monitoring.registry).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ffcv_amcl.monitoring.names import POS_BELOW_HALF, POS_NEG_OVERLAP, head_field

BINS = 50
HALF = 0.5


def bin_index(s: torch.Tensor) -> torch.Tensor:
    """Bin of each similarity among BINS equal bins on [-1, 1], the last one closed (as numpy.histogram)."""
    return ((s.float() + 1) * (BINS / 2)).floor().long().clamp(0, BINS - 1)


def pair_similarities(projections: torch.Tensor) -> torch.Tensor:
    """(C, B, B) cosine similarities of views a (rows) with views b (columns) of projections (C, 2B, D): the
    positives on the diagonal, the negatives off it."""
    z = F.normalize(projections.detach().float(), dim=-1)
    B = z.shape[1] // 2
    return torch.einsum("cid,cjd->cij", z[:, :B], z[:, B:2 * B])


def histogram(s: torch.Tensor) -> torch.Tensor:
    """(C, BINS) counts of each head's similarities (C, M); index_add_, which reads nothing back to the host."""
    C = s.shape[0]
    idx = (bin_index(s) + BINS * torch.arange(C, device=s.device).unsqueeze(1)).reshape(-1)
    return idx.new_zeros(C * BINS).index_add_(0, idx, torch.ones_like(idx)).view(C, BINS)


def overlap_coefficient(counts_a: torch.Tensor, counts_b: torch.Tensor) -> torch.Tensor:
    """sum_k min(p_a, p_b) of two histograms along the last axis, each normalised to sum 1 (an empty one to 0)."""
    p_a = counts_a.double() / counts_a.double().sum(-1, keepdim=True).clamp(min=1)
    p_b = counts_b.double() / counts_b.double().sum(-1, keepdim=True).clamp(min=1)
    return torch.minimum(p_a, p_b).sum(-1)


class Separation:
    """Per-head histograms of the epoch's positive and negative similarities, and the positives below 0.5."""

    def __init__(self):
        self.totals: dict[str, torch.Tensor] = {}

    def add(self, projections: torch.Tensor) -> None:
        if projections.shape[1] < 4:                    # fewer than two images: no negative pair
            return
        sim = pair_similarities(projections)
        pos = sim.diagonal(dim1=1, dim2=2)
        pos_counts = histogram(pos)
        # every pair's histogram less the positives': a boolean mask would read its size back to the host
        step = {"pos": pos_counts, "neg": histogram(sim.flatten(1)) - pos_counts, "below": (pos < HALF).sum(1)}
        for key, value in step.items():
            prev = self.totals.get(key)
            self.totals[key] = value if prev is None else prev.to(value.device) + value

    def state(self, reducer=lambda x: x) -> dict:
        return {key: reducer(value).cpu() for key, value in self.totals.items()}

    def load(self, state: dict) -> None:
        self.totals = dict(state)

    def fields(self, reducer=lambda x: x) -> dict:
        """{pos_neg_overlap_head{c}, pos_below_half_head{c}} over the totals summed by `reducer` (a collective)."""
        if not self.totals:
            return {}
        t = {key: reducer(value).double().cpu() for key, value in self.totals.items()}
        overlap = overlap_coefficient(t["pos"], t["neg"])
        below = t["below"] / t["pos"].sum(1).clamp(min=1)
        out = {}
        for c in range(overlap.shape[0]):
            out[head_field(POS_NEG_OVERLAP, c)] = float(overlap[c])
            out[head_field(POS_BELOW_HALF, c)] = float(below[c])
        return out


class SeparationMonitor:
    """Separation over an epoch, as the trainer's monitors run: fed each step's StepOutput (its `projections`),
    saved mid-epoch, turned into record fields at the end. Applies to every method."""

    def __init__(self):
        self.separation = Separation()

    @classmethod
    def for_model(cls, model) -> "SeparationMonitor":
        return cls()

    def add(self, out) -> None:
        projections = getattr(out, "projections", None)
        if projections is not None:
            self.separation.add(projections)

    def state(self, reducer) -> dict:
        return self.separation.state(reducer)

    def load(self, state: dict) -> None:
        self.separation.load(state)

    def finish(self, reducer) -> tuple[dict, list[str]]:
        return self.separation.fields(reducer), []
