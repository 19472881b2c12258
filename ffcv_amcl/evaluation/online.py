"""Online linear probe: a linear classifier trained alongside pretraining on detached backbone features.

As solo-learn, lightly and FFCV-SSL report it: every step the classifier takes one SGD step on the features the
backbone already computed for the training views (detached, so the backbone never sees its gradients), with its
own optimizer and cosine schedule; at the end of an epoch its top-1 on the validation features. Zero-initialised,
so it draws nothing from the global random state and leaves the pretraining's random stream untouched.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ffcv_amcl.optim import WarmupCosine


class OnlineProbe:
    """Linear(F, classes) on detached features; under torchrun its gradients are averaged over the processes."""

    def __init__(self, feature_dim: int, num_classes: int, *, lr: float, total_steps: int,
                 device: torch.device, distributed: bool = False):
        self.linear = torch.nn.utils.skip_init(nn.Linear, feature_dim, num_classes, device=device)  # no RNG draw
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.bias.zero_()
        self.optimizer = torch.optim.SGD(self.linear.parameters(), lr=lr, momentum=0.9)
        self.schedule = WarmupCosine(lr, total_steps)
        self.distributed = distributed

    @classmethod
    def for_run(cls, cfg, feature_dim: int, info, total_steps: int) -> "OnlineProbe | None":
        """The probe of a training run when eval.online_linear=1 and a validation set gives it something to
        report (and the training set's sidecar names at least two classes); None otherwise."""
        if not (cfg.eval.online_linear and cfg.data.val_dataset):
            return None
        from ffcv_amcl.data.meta import read_meta
        classes = read_meta(cfg.data.train_dataset).get("num_classes") or 0
        if classes < 2:
            return None
        return cls(feature_dim, int(classes), lr=cfg.eval.online_lr, total_steps=total_steps, device=info.device,
                   distributed=info.distributed)

    def step(self, features: torch.Tensor, labels: torch.Tensor, step: int) -> None:
        """One SGD step on (N, F) features (detached here) of views whose images have `labels` (B,)."""
        x = features.detach().float()
        y = labels.to(x.device).long().view(-1).repeat(x.shape[0] // max(labels.numel(), 1))
        self.schedule.apply(self.optimizer, step)
        loss = F.cross_entropy(self.linear(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.distributed:
            world = torch.distributed.get_world_size()
            for p in self.linear.parameters():       # gloo has no AVG: sum, then divide
                torch.distributed.all_reduce(p.grad)
                p.grad.div_(world)
        self.optimizer.step()

    @torch.no_grad()
    def top1(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        """Top-1 accuracy (percent) on features (N, F) with labels (N,)."""
        pred = self.linear(features.float()).argmax(1)
        return 100.0 * (pred == labels.to(pred.device)).float().mean().item()

    def state_dict(self) -> dict:
        return {"linear": self.linear.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.linear.load_state_dict(state["linear"])
        self.optimizer.load_state_dict(state["optimizer"])
