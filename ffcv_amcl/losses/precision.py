"""Losses compute in float32 (float64 when given float64) with autocast off.

Similarities divided by small temperatures amplify rounding: bf16 logits at 1/tau = 10..1e5 are useless.
The projections may arrive in bf16 from an autocast region; the loss widens them here.
"""
from __future__ import annotations

import contextlib

import torch


def full_precision(x: torch.Tensor):
    """Autocast off on x's device (a no-op context elsewhere)."""
    if x.device.type in ("cpu", "cuda", "xpu", "mps", "hpu"):
        return torch.autocast(device_type=x.device.type, enabled=False)
    return contextlib.nullcontext()


def wide(x: torch.Tensor) -> torch.Tensor:
    """x as float32, or unchanged when already float32/float64."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()
