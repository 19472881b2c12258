"""Backbone features of a whole split, computed once (eval mode, no augmentation)."""
from __future__ import annotations

import contextlib

import torch


@torch.no_grad()
def extract_features(encode, loader, *, device: torch.device | str = "cpu",
                     autocast_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run `encode` (images -> (N, F)) over `loader` yielding (images, labels); returns float32 features
    and int64 labels, on `device`. The caller puts the network in eval mode."""
    device = torch.device(device)
    feats, labels = [], []
    ctx = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None
           else contextlib.nullcontext())
    for images, y in loader:
        with ctx:
            f = encode(images.to(device, non_blocking=True))
        feats.append(f.float())
        labels.append(y.to(device).long().view(-1))
    if not feats:
        return torch.zeros(0, 0, device=device), torch.zeros(0, dtype=torch.long, device=device)
    return torch.cat(feats), torch.cat(labels)
