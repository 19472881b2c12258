"""SimSiam: projector + predictor, stop-gradient on the projections; AMCL: per-pair temperature on cos(p, sg z)."""
from __future__ import annotations

import torch

from ffcv_amcl.losses import negative_cosine
from ffcv_amcl.model.heads import MultiHeadPredictor, MultiHeadProjector
from ffcv_amcl.model.methods.base import SSLModel


class SimSiam(SSLModel):
    """BN projector F -> 2048 -> 2048 and a bottleneck predictor (2048 -> 512 -> 2048) per head."""

    method = "simsiam"
    amcl_kind = "siamese"

    @classmethod
    def defaults(cls, cfg) -> dict:
        proj_dim = cfg.model.proj_dim or 2048
        return {"loss.temperature": 0.5, "loss.beta": 1e-4, "model.proj_dim": 2048, "model.proj_hidden": 2048,
                "model.pred_hidden": proj_dim // 4}

    def __init__(self, cfg, **kw):
        super().__init__(cfg, **kw)
        m = cfg.model
        self.projector = MultiHeadProjector(self.feature_dim, m.proj_hidden, m.proj_dim, self.heads, "bn_mlp")
        self.predictor = MultiHeadPredictor(m.proj_dim, m.pred_hidden, self.heads)
        self.criterion = self.amcl_criterion(cfg)

    def targets(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """What the predictions regress: the online projections themselves (stop-gradient in the loss)."""
        return z

    def forward(self, view_a, view_b):
        B = view_a.shape[0]
        x = torch.cat([view_a, view_b])
        h, z = self.embed(x)
        p = self.predictor(z)
        t = self.targets(x, z)
        pa, pb, ta, tb = p[:, :B], p[:, B:], t[:, :B], t[:, B:]
        loss = self.criterion(pa, pb, ta, tb) if self.amcl else self.classic_loss(pa, pb, ta, tb)
        return self.output(loss, h)

    def classic_loss(self, pa, pb, ta, tb):
        return negative_cosine(pa, pb, ta, tb, validate=False)
