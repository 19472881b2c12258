"""Barlow Twins: cross-correlation of the two views' standardised projections over the global batch."""
from __future__ import annotations

import torch

from ffcv_amcl import distributed as dist
from ffcv_amcl.losses import barlow_twins
from ffcv_amcl.model.heads import MultiHeadProjector
from ffcv_amcl.model.methods.base import SSLModel


class BarlowTwins(SSLModel):
    """BN projector F -> 2048 -> 2048 per head; AMCL's temperature network reads channel vectors of the global
    batch, so its size is fixed by the global batch."""

    method = "barlow_twins"
    amcl_kind = "barlow"
    refusals = {"local_views": "Barlow Twins' cross-correlation pairs two views of equal size (Zbontar et al. "
                               "2021): set --data.local_crops=0"}

    @classmethod
    def defaults(cls, cfg) -> dict:
        return {"loss.temperature": 0.5, "loss.beta": 1e-6, "model.proj_dim": 2048, "model.proj_hidden": 2048,
                "model.pred_hidden": 512}

    def __init__(self, cfg, **kw):
        super().__init__(cfg, **kw)
        m, l = cfg.model, cfg.loss
        self.projector = MultiHeadProjector(self.feature_dim, m.proj_hidden, m.proj_dim, self.heads, "bn_mlp")
        self.lambd = l.barlow_lambda
        self.criterion = self.amcl_criterion(cfg)

    def forward(self, view_a, view_b):
        B = view_a.shape[0]
        h, z = self.embed(torch.cat([view_a, view_b]))
        za = dist.gather_with_grad(z[:, :B], dim=1)
        zb = dist.gather_with_grad(z[:, B:], dim=1)
        loss = self.criterion(za, zb) if self.amcl else barlow_twins(za, zb, self.lambd, validate=False)
        return self.output(loss, h, z)
