"""SimCLR's NT-Xent baseline: one fixed temperature, all other 2B-2 views as negatives, summed over heads."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ffcv_amcl.losses import checks
from ffcv_amcl.losses.precision import full_precision, wide


def nt_xent(za: torch.Tensor, zb: torch.Tensor, temperature: float = 0.5, *, validate: bool = True) -> torch.Tensor:
    """za, zb: (C, B, D) (C=1 is classic SimCLR); mean over all 2B anchors per head, summed over heads."""
    t = checks.positive("nt_xent", "temperature", temperature)
    C, B, D = checks.inputs("nt_xent", validate, za=za, zb=zb)
    with full_precision(za):
        z = F.normalize(wide(torch.cat([za, zb], 1)), dim=-1)               # (C, 2B, D)
        n = 2 * B
        logits = torch.einsum("cid,cjd->cij", z, z) / t
        logits = logits.masked_fill(torch.eye(n, dtype=torch.bool, device=z.device), float("-inf"))
        target = (torch.arange(n, device=z.device) + B) % n
        ce = F.cross_entropy(logits.reshape(C * n, n), target.repeat(C), reduction="none")
        return ce.view(C, n).mean(-1).sum()
