"""The non-finite check: a NaN or infinite loss stops the run with one line, before anything is saved."""
from __future__ import annotations

import torch

from ffcv_amcl import distributed as dist
from ffcv_amcl.errors import UserError


def nonfinite_check(losses: list[torch.Tensor], first_step: int, epoch: int, last_ckpt) -> None:
    """Stop with one line when a loss is NaN/inf; names the first bad step. One host sync per call."""
    if not losses:
        return
    stacked = dist.mean_across_ranks(torch.stack(losses))
    bad = (~torch.isfinite(stacked)).nonzero()
    if len(bad):
        i = int(bad[0])
        where = f"last good checkpoint {last_ckpt} is intact" if last_ckpt else "no checkpoint was written yet"
        raise UserError(f"non-finite loss ({float(stacked[i])}) at step {first_step + i} (epoch {epoch + 1}): "
                        f"likely a learning rate too high for this batch, or fp16 overflow; lower "
                        f"--training.lr, keep --training.clip_grad=1.0 or use --training.precision=bf16; "
                        f"{where}")
