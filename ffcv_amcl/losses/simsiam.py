"""SimSiam's symmetric negative cosine with stop-gradient on the projections, summed over heads."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ffcv_amcl.losses import checks
from ffcv_amcl.losses.precision import full_precision, wide


def stopgrad_cosines(pa: torch.Tensor, pb: torch.Tensor, za: torch.Tensor, zb: torch.Tensor):
    """(cos(pa, sg zb), cos(pb, sg za)), each (C, B), in float32 at least: what SimSiam and BYOL both regress."""
    pa, pb = wide(pa), wide(pb)
    ca = F.cosine_similarity(pa, wide(zb).detach().to(pa.dtype), dim=-1)
    cb = F.cosine_similarity(pb, wide(za).detach().to(pb.dtype), dim=-1)
    return ca, cb


def negative_cosine(pa: torch.Tensor, pb: torch.Tensor, za: torch.Tensor, zb: torch.Tensor, *,
                    validate: bool = True) -> torch.Tensor:
    """Per head mean_b( -1/2 cos(pa, sg zb) - 1/2 cos(pb, sg za) ), summed over heads; all (C, B, D)."""
    checks.inputs("negative_cosine", validate, pa=pa, pb=pb, za=za, zb=zb)
    with full_precision(pa):
        ca, cb = stopgrad_cosines(pa, pb, za, zb)
        return (-0.5 * ca - 0.5 * cb).mean(-1).sum()
