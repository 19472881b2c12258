"""SimCLR's NT-Xent baseline: one fixed temperature, all other 2B-2 views as negatives, summed over heads; and its
multi-crop form, where every other view of the same image is a positive."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ffcv_amcl.errors import UserError
from ffcv_amcl.losses import checks
from ffcv_amcl.losses.pairs import pair_products
from ffcv_amcl.losses.precision import full_precision, wide


def nt_xent(za: torch.Tensor, zb: torch.Tensor, temperature: float = 0.5, *, validate: bool = True) -> torch.Tensor:
    """za, zb: (C, B, D) (C=1 is classic SimCLR); mean over all 2B anchors per head, summed over heads."""
    t = checks.positive("nt_xent", "temperature", temperature)
    C, B, D = checks.inputs("nt_xent", validate, za=za, zb=zb)
    with full_precision(za):
        z = F.normalize(wide(torch.cat([za, zb], 1)), dim=-1)               # (C, 2B, D)
        n = 2 * B
        logits = pair_products(z, z) / t
        logits = logits.masked_fill(torch.eye(n, dtype=torch.bool, device=z.device), float("-inf"))
        target = (torch.arange(n, device=z.device) + B) % n
        ce = F.cross_entropy(logits.reshape(C * n, n), target.repeat(C), reduction="none")
        return ce.view(C, n).mean(-1).sum()


def multi_positive_nt_xent(z: torch.Tensor, temperature: float = 0.5, *, validate: bool = True) -> torch.Tensor:
    """NT-Xent over V views of each image (multi-crop): z (C, V, B, D); every other view of the same image is a
    positive, every view of the other images a negative. Per anchor the mean over its V - 1 positives of
    -log(exp(s_p / t) / sum_{j != anchor} exp(s_j / t)); mean over the V B anchors, summed over heads. V = 2 is
    nt_xent."""
    owner = "multi_positive_nt_xent"
    C, V, B, D = checks.views(owner, {"z": z}, ndims=(4,))
    t = checks.positive(owner, "temperature", temperature)
    if V < 2:
        raise UserError(f"{owner}: z has {V} view(s) of each image (shape {tuple(z.shape)}); pass at least 2")
    if validate:
        checks.finite(owner, {"z": z})
    with full_precision(z):
        u = F.normalize(wide(z), dim=-1).reshape(C, V * B, D)                  # view-major: index v B + b
        n = V * B
        self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
        logits = (pair_products(u, u) / t).masked_fill(self_mask, float("-inf"))
        log_p = torch.log_softmax(logits, dim=-1)
        image = torch.arange(n, device=z.device) % B
        positive = (image[:, None] == image[None, :]) & ~self_mask
        return -(log_p.masked_fill(~positive, 0.0).sum(-1) / (V - 1)).mean(-1).sum()
