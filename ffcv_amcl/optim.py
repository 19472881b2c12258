"""Optimiser and learning-rate schedule: SGD or LARS, linear warm-up then cosine, evaluated per step.

The schedule is a pure function of the global step, so a resumed run only needs the step counter
to be back on the same curve.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ffcv_amcl.errors import UserError

OPTIMIZERS = ("sgd", "lars")


def split_decay(model: nn.Module, exclude_bn_bias: bool) -> list[dict]:
    """Parameter groups; with exclude_bn_bias, 1-D tensors (BN/LayerNorm scales, all biases) skip weight
    decay and LARS adaptation (as in SimCLR/BYOL/Barlow Twins)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (no_decay if exclude_bn_bias and p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "lars_exclude": True})
    return groups


class LARS(torch.optim.Optimizer):
    """SGD with momentum and a layer-wise trust ratio eta*||w|| / ||g + wd*w|| (You et al., 2017),
    for batches of thousands. Groups with `lars_exclude=True` fall back to plain SGD."""

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 eta: float = 0.001):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta,
                                      lars_exclude=False))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["weight_decay"] != 0:
                    g = g.add(p, alpha=group["weight_decay"])
                if not group["lars_exclude"]:
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
                    trust = torch.where((w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / g_norm,
                                        torch.ones_like(w_norm))
                    g = g.mul(trust)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.clone(g).detach()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(g)
                p.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss


def make_optimizer(model: nn.Module, *, name: str = "sgd", lr: float, momentum: float = 0.9,
                   weight_decay: float = 5e-4, exclude_bn_bias: bool = False) -> torch.optim.Optimizer:
    """SGD (momentum) or LARS over the trainable parameters; `lr` is the peak of the schedule."""
    groups = split_decay(model, exclude_bn_bias)
    if name == "sgd":
        for g in groups:
            g.pop("lars_exclude", None)
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise UserError(f"unknown training.optimizer '{name}': use one of {', '.join(OPTIMIZERS)}")


class WarmupCosine:
    """lr(step): linear from ~0 to `base_lr` over `warmup_steps`, then cosine down to `final_lr`."""

    def __init__(self, base_lr: float, total_steps: int, warmup_steps: int = 0, final_lr: float = 0.0):
        self.base_lr, self.final_lr = base_lr, final_lr
        self.total_steps = max(1, total_steps)
        self.warmup_steps = min(max(0, warmup_steps), self.total_steps)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        t = min(1.0, (step - self.warmup_steps) / span)
        return self.final_lr + 0.5 * (self.base_lr - self.final_lr) * (1 + math.cos(math.pi * t))

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        lr = self(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr
