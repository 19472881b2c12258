"""What the benchmarks and studies share: the repository root, the process clock, the reference formulation of
the AMCL loss, the photographs the loader benchmark reads and the check of a kept .beton.

    from benchmarks.common import ROOT, ProcessClock, ReferenceAMCL, kept_beton, photo_crops
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ffcv_amcl.errors import UserError
from ffcv_amcl.losses.amcl import AMCLContrastive
from ffcv_amcl.losses.temperature import omega, pair_tau

ROOT = Path(__file__).resolve().parent.parent          # the repository: configs, write_datasets.py, BENCHMARKS.md


class ProcessClock:
    """CPU seconds of this process (all its threads) between start() and stop(): on a CPU that other jobs share,
    it counts only this process's own work, where wall time would mostly measure the others. CPU only."""

    def start(self) -> None:
        self.t0 = time.process_time()

    def stop(self) -> float:
        return time.process_time() - self.t0


def kept_beton(path: Path) -> bool:
    """Whether a .beton written by an earlier run can be used again: it passes every reader's check (tables,
    sidecar, a sample of its JPEGs; ffcv_amcl.data.beton.validate_beton). Missing, damaged or without its sidecar:
    False, and the caller writes it again."""
    from ffcv_amcl.data.beton import validate_beton

    try:
        validate_beton(path)
    except UserError:
        return False
    return True


# ---- the reference formulation of the SimCLR-AMCL loss ---------------------------------------------------------

def reference_head_loss(m: AMCLContrastive, s_pos, a_pos, s_neg, a_neg) -> torch.Tensor:
    """Mean over anchors of the `ref` form's per-anchor loss, from the positives' (B,) and the selected
    negatives' (B, k) similarities s and phi inner products a: -s+/tau+ + mean s_n/tau_n + beta Omega(tau+)
    - beta sum (log tau_n + 1/tau_n)."""
    tau_p, tau_n = pair_tau(a_pos, m.tau_min, m.tau_max), pair_tau(a_neg, m.tau_min, m.tau_max)
    per_anchor = (-s_pos / tau_p + (s_neg / tau_n).mean(-1) + m.beta * omega(tau_p, m.dim)
                  - m.beta * (torch.log(tau_n) + 1.0 / tau_n).sum(-1))
    return per_anchor.mean()


class ReferenceAMCL(nn.Module):
    """The SimCLR-AMCL loss as the authors' reference implementation computes it: a Python loop over heads and
    both directions, the negatives expanded to (B, 2B-2, D) per anchor and the temperature network run on every
    anchor-negative pair. It computes the same function as `criterion` (an AMCLContrastive of form `ref`, whose
    phi and constants it uses), at the reference's cost; only the negatives' index is built once per batch size,
    with tensor ops, so that the reference is not charged for bookkeeping."""

    def __init__(self, criterion: AMCLContrastive):
        super().__init__()
        self.m = criterion
        self._others: dict = {}

    def others(self, B: int, device) -> torch.Tensor:
        """(B, 2B-2): for anchor i of one direction, every view of the batch but itself and its positive."""
        key = (B, str(device))
        if key not in self._others:
            j = torch.arange(2 * B, device=device).expand(B, 2 * B)
            i = torch.arange(B, device=device)[:, None]
            self._others[key] = j[(j != i) & (j != i + B)].view(B, 2 * B - 2)
        return self._others[key]

    def forward(self, za: torch.Tensor, zb: torch.Tensor) -> torch.Tensor:
        m = self.m
        C, B, _ = za.shape
        others = self.others(B, za.device)
        k = min(m.topk, 2 * B - 2)
        total = za.new_zeros(())
        for c in range(C):
            for anchors, positives in ((za[c], zb[c]), (zb[c], za[c])):
                a, pos = F.normalize(anchors, dim=-1), F.normalize(positives, dim=-1)
                negs = torch.cat([a, pos])[others]                          # (B, 2B-2, D)
                pa, pn = m.phi(a), m.phi(negs)                              # phi on every anchor-negative pair
                s_neg = torch.einsum("bd,bnd->bn", a, negs)
                a_neg = torch.einsum("bd,bnd->bn", pa, pn)
                with torch.no_grad():
                    idx = s_neg.topk(k, dim=-1).indices
                s_pos, a_pos = (a * pos).sum(-1), (pa * m.phi(pos)).sum(-1)
                total = total + 0.5 * reference_head_loss(m, s_pos, a_pos, s_neg.gather(-1, idx),
                                                          a_neg.gather(-1, idx))
        return total


def check_reference() -> float:
    """ReferenceAMCL against the project's batched `ref` loss on a small float64 case: their relative
    difference (UserError above 1e-9, where the two would not measure the same function)."""
    torch.manual_seed(0)
    ref = ReferenceAMCL(AMCLContrastive(16, 2, form="ref", validate=False)).double()
    za, zb = torch.randn(2, 6, 16, dtype=torch.float64), torch.randn(2, 6, 16, dtype=torch.float64)
    ours, project = ref(za, zb), ref.m(za, zb)
    diff = float((ours - project).abs()) / float(project.abs())
    if diff > 1e-9:
        raise UserError(f"the reference AMCL loss disagrees with AMCLContrastive(form='ref') by {diff:.1e}")
    return diff


# ---- data --------------------------------------------------------------------------------------------------------

def photo_crops(n: int, seed: int, min_side: int, max_side: int):
    """n real-looking (PIL image, label) pairs: random crops of scikit-learn's two sample photographs at random
    sizes, half of them mirrored; label = index mod 10."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(p) for p in load_sample_images().images]
    rng = np.random.default_rng(seed)
    for i in range(n):
        ph = photos[i % 2]
        W, H = ph.size
        cw, ch = int(rng.integers(W // 5, W)), int(rng.integers(H // 5, H))
        x, y = int(rng.integers(0, W - cw + 1)), int(rng.integers(0, H - ch + 1))
        size = (int(rng.integers(min_side, max_side + 1)), int(rng.integers(min_side, max_side + 1)))
        im = ph.crop((x, y, x + cw, y + ch)).resize(size, Image.BILINEAR)
        if rng.random() < 0.5:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        yield im, i % 10
