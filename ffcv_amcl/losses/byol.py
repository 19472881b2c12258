"""BYOL's regression loss 2 - 2 cos(prediction, sg target), symmetrised, summed over heads."""
from __future__ import annotations

import torch

from ffcv_amcl.losses import checks
from ffcv_amcl.losses.precision import full_precision
from ffcv_amcl.losses.simsiam import stopgrad_cosines


def byol_loss(pa: torch.Tensor, pb: torch.Tensor, ta: torch.Tensor, tb: torch.Tensor, *,
              validate: bool = True) -> torch.Tensor:
    """Per head mean_b(2 - 2 cos(pa, sg tb)) + mean_b(2 - 2 cos(pb, sg ta)), summed over heads.

    pa, pb: online predictions of views a, b; ta, tb: target projections (detached here); all (C, B, D).
    """
    checks.inputs("byol_loss", validate, pa=pa, pb=pb, ta=ta, tb=tb)
    with full_precision(pa):
        ca, cb = stopgrad_cosines(pa, pb, ta, tb)
        return ((2 - 2 * ca).mean(-1) + (2 - 2 * cb).mean(-1)).sum()
