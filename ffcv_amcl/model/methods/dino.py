"""DINO (Caron et al. 2021): a student distils an EMA teacher; the teacher sees the global views, the student
every view (multi-crop), the teacher's outputs centred and sharpened."""
from __future__ import annotations

import torch

from ffcv_amcl import distributed as dist
from ffcv_amcl.errors import check
from ffcv_amcl.losses import dino_loss
from ffcv_amcl.model.heads import DINOHead
from ffcv_amcl.model.methods.base import SSLModel, cosine_momentum, ema_, frozen_copy


class DINO(SSLModel):
    """DINO head F -> 2048 -> 2048 -> 256 -> K (model.proj_hidden, model.pred_hidden = bottleneck, model.proj_dim
    = K); teacher momentum loss.momentum -> 1 on a cosine; centre: EMA (loss.dino_center_momentum) of the
    teacher's batch mean over all ranks; teacher temperature linear from loss.dino_warmup_teacher_temp to
    loss.dino_teacher_temp over loss.dino_warmup_epochs; the head's last layer has no gradient for the first
    loss.dino_freeze_last_epochs epochs. Local views (multi-crop) go through the student as one batch."""

    method = "dino"
    amcl_kind = None
    local_views = True
    refusals = {"amcl": "DINO's loss compares distributions over K prototypes, not pair similarities, and has no "
                        "AMCL form (nor has the paper): set --model.amcl=0"}
    DEFAULTS = {"loss.temperature": 0.1, "loss.beta": 1e-4, "model.proj_dim": 65536, "model.proj_hidden": 2048,
                "model.pred_hidden": 256}

    @classmethod
    def check_config(cls, cfg, world_size: int) -> None:
        super().check_config(cfg, world_size)
        check(cfg.model.heads == 1, f"model.heads={cfg.model.heads}: DINO trains one head (its teacher, centre and "
                                    f"temperatures are the head's): set --model.heads=1")

    def __init__(self, cfg, **kw):
        super().__init__(cfg, **kw)
        m, l = cfg.model, cfg.loss
        self.projector = DINOHead(self.feature_dim, m.proj_hidden, m.pred_hidden, m.proj_dim)
        self.teacher_backbone = frozen_copy(self.backbone)
        self.teacher_projector = frozen_copy(self.projector)
        self.register_buffer("center", torch.zeros(m.proj_dim))
        self.base_momentum, self.center_momentum = l.momentum, l.dino_center_momentum
        self.student_temp, self.teacher_temps = l.temperature, (l.dino_warmup_teacher_temp, l.dino_teacher_temp)
        self.warmup_epochs, self.freeze_epochs = l.dino_warmup_epochs, l.dino_freeze_last_epochs
        self.projector.last.register_hook(self._frozen_last)

    def _frozen_last(self, grad: torch.Tensor) -> torch.Tensor:
        """No gradient into the last layer during the first epochs (the paper's freeze_last_layer)."""
        return torch.zeros_like(grad) if self.epoch < self.freeze_epochs else grad

    def encoders(self, target: bool):
        return (self.teacher_backbone, self.teacher_projector) if target else (self.backbone, self.projector)

    def teacher_temp(self) -> float:
        start, end = self.teacher_temps
        if self.epoch >= self.warmup_epochs:
            return end
        return start + (end - start) * self.epoch / self.warmup_epochs

    @torch.no_grad()
    def momentum_update(self) -> None:
        m = cosine_momentum(self.base_momentum, self.step, self.total_steps)
        ema_(self.teacher_backbone, self.backbone, m)
        ema_(self.teacher_projector, self.projector, m)

    @torch.no_grad()
    def _update_center(self, teacher: torch.Tensor) -> None:
        """centre <- m centre + (1 - m) mean of the teacher's outputs over views, batch and ranks."""
        n = teacher.shape[0] * teacher.shape[1] * dist.world_size()
        batch_center = dist.sum_across_ranks(teacher.float().sum((0, 1))) / n
        self.center.mul_(self.center_momentum).add_(batch_center.to(self.center.dtype), alpha=1 - self.center_momentum)

    def forward(self, view_a, view_b, local_views=None):
        B = view_a.shape[0]
        globals_ = torch.cat([view_a, view_b])
        h, z = self.embed(globals_)
        student = [z[0].view(2, B, -1)]
        if local_views is not None:                   # (N B, 3, s, s), local-view-major
            student.append(self.project(local_views)[0].view(-1, B, z.shape[-1]))
        with torch.no_grad():
            teacher = self.project(globals_, target=True)[0].view(2, B, -1)
        loss = dino_loss(torch.cat(student), teacher, self.center, student_temp=self.student_temp,
                         teacher_temp=self.teacher_temp(), validate=False)
        self._update_center(teacher)
        return self.output(loss, h, z)
