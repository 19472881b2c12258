"""SimCLR: negatives are the other views of the global batch; with AMCL a learned temperature per pair."""
from __future__ import annotations

import torch

from ffcv_amcl import distributed as dist
from ffcv_amcl.losses import nt_xent
from ffcv_amcl.model.heads import MultiHeadProjector
from ffcv_amcl.model.methods.base import SSLModel, feature_dim


class SimCLR(SSLModel):
    """C heads F -> F -> 128 (ReLU, no BN), NT-Xent at tau = 0.5 or AMCL with the top-k hardest negatives.
    The projections of every rank are gathered with gradients: the loss is that of the global batch."""

    method = "simclr"
    amcl_kind = "contrastive"

    @classmethod
    def defaults(cls, cfg) -> dict:
        return {"loss.temperature": 0.5, "loss.beta": 1e-4, "model.proj_dim": 128,
                "model.proj_hidden": feature_dim(cfg), "model.pred_hidden": 512}

    def __init__(self, cfg, **kw):
        super().__init__(cfg, **kw)
        m = cfg.model
        self.projector = MultiHeadProjector(self.feature_dim, m.proj_hidden, m.proj_dim, self.heads, "mlp")
        self.criterion = self.amcl_criterion(cfg)
        self.temperature = cfg.loss.temperature

    def forward(self, view_a, view_b):
        B = view_a.shape[0]
        h, z = self.embed(torch.cat([view_a, view_b]))                    # (2B, F), (C, 2B, D)
        za = dist.gather_with_grad(z[:, :B], dim=1)
        zb = dist.gather_with_grad(z[:, B:], dim=1)
        loss = self.criterion(za, zb) if self.amcl else nt_xent(za, zb, self.temperature, validate=False)
        return self.output(loss, h)
