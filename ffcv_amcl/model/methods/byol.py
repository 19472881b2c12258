"""BYOL: online backbone/projector/predictor regress a momentum target (momentum loss.momentum -> 1, cosine)."""
from __future__ import annotations

import torch

from ffcv_amcl.losses import byol_loss, multi_view_byol_loss
from ffcv_amcl.model.methods.base import cosine_momentum, ema_, feature_dim, frozen_copy
from ffcv_amcl.model.methods.simsiam import SimSiam


def _hidden(cfg) -> int:
    """BYOL's MLP width: 4096 on ResNet-50 (the paper), twice the features on smaller backbones."""
    return 4096 if cfg.model.arch == "resnet50" else 2 * feature_dim(cfg)


class BYOL(SimSiam):
    """AMCL on BYOL is AMCL's SimSiam form (Eq. 2.2) with the target projections in place of sg(z): BYOL's
    loss is SimSiam's with a momentum target, so that is where the adaptive temperature is defined."""

    method = "byol"
    DEFAULTS = {"loss.temperature": 0.5, "loss.beta": 1e-4, "model.proj_dim": 256,
                "model.proj_hidden": _hidden,
                "model.pred_hidden": lambda cfg: cfg.model.proj_hidden or _hidden(cfg)}

    def __init__(self, cfg, **kw):
        super().__init__(cfg, **kw)
        self.target_backbone = frozen_copy(self.backbone)
        self.target_projector = frozen_copy(self.projector)
        self.base_momentum = cfg.loss.momentum

    def encoders(self, target: bool):
        return (self.target_backbone, self.target_projector) if target else (self.backbone, self.projector)

    def current_momentum(self) -> float:
        return cosine_momentum(self.base_momentum, self.step, self.total_steps)

    @torch.no_grad()
    def momentum_update(self) -> None:
        m = self.current_momentum()
        ema_(self.target_backbone, self.backbone, m)
        ema_(self.target_projector, self.projector, m)

    def targets(self, x, z):
        with torch.no_grad():
            return self.project(x, target=True)

    def classic_loss(self, pa, pb, ta, tb):
        return byol_loss(pa, pb, ta, tb, validate=False)

    def multi_crop_loss(self, p, t):
        return multi_view_byol_loss(p, t, validate=False)
