"""Barlow Twins: cross-correlation of the two views' standardised projections over the global batch."""
from __future__ import annotations

from ffcv_amcl.losses import barlow_twins
from ffcv_amcl.model.heads import MultiHeadProjector
from ffcv_amcl.model.methods.base import SSLModel


class BarlowTwins(SSLModel):
    """BN projector F -> 2048 -> 2048 per head; AMCL's temperature network reads channel vectors of the global
    batch, so its size is fixed by the global batch."""

    method = "barlow_twins"
    amcl_kind = "barlow"
    DEFAULTS = {"loss.temperature": 0.5, "loss.beta": 1e-6, "model.proj_dim": 2048, "model.proj_hidden": 2048,
                "model.pred_hidden": 512}

    def __init__(self, cfg, **kw):
        super().__init__(cfg, **kw)
        m, l = cfg.model, cfg.loss
        self.projector = MultiHeadProjector(self.feature_dim, m.proj_hidden, m.proj_dim, self.heads, "bn_mlp")
        self.lambd = l.barlow_lambda
        self.criterion = self.amcl_criterion(cfg)

    def forward(self, view_a, view_b):
        h, z, za, zb = self.embed_global(view_a, view_b)
        loss = self.criterion(za, zb) if self.amcl else barlow_twins(za, zb, self.lambd, validate=False)
        return self.output(loss, h, z)
