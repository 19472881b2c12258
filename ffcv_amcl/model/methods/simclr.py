"""SimCLR: negatives are the other views of the global batch; with AMCL a learned temperature per pair."""
from __future__ import annotations

import torch

from ffcv_amcl import distributed as dist
from ffcv_amcl.losses import multi_positive_nt_xent, nt_xent
from ffcv_amcl.model.heads import MultiHeadProjector
from ffcv_amcl.model.methods.base import SSLModel, feature_dim


class SimCLR(SSLModel):
    """C heads F -> F -> 128 (ReLU, no BN), NT-Xent at tau = 0.5 or AMCL with the top-k hardest negatives.
    The projections of every rank are gathered with gradients: the loss is that of the global batch. With
    multi-crop local views (one batch through the online encoder) the loss is the multi-positive NT-Xent."""

    method = "simclr"
    amcl_kind = "contrastive"
    local_views = True
    refusals = {"amcl_local_views": "AMCL's contrastive forms pair each anchor with one positive, and local crops "
                                    "give it several: use --model.amcl=0 with --data.local_crops, or "
                                    "--data.local_crops=0 with AMCL"}
    DEFAULTS = {"loss.temperature": 0.5, "loss.beta": 1e-4, "model.proj_dim": 128, "model.proj_hidden": feature_dim,
                "model.pred_hidden": 512}

    def __init__(self, cfg, **kw):
        super().__init__(cfg, **kw)
        m = cfg.model
        self.projector = MultiHeadProjector(self.feature_dim, m.proj_hidden, m.proj_dim, self.heads, "mlp")
        self.criterion = self.amcl_criterion(cfg)
        self.temperature = cfg.loss.temperature

    def forward(self, view_a, view_b, local_views=None):
        h, z, za, zb = self.embed_global(view_a, view_b)
        if local_views is not None:
            return self.output(self._multi_crop_loss(za, zb, local_views, view_a.shape[0]), h, z)
        loss = self.criterion(za, zb) if self.amcl else nt_xent(za, zb, self.temperature, validate=False)
        return self.output(loss, h, z)

    def _multi_crop_loss(self, za, zb, local_views, batch: int):
        """Multi-positive NT-Xent of the 2 global and N local views (N x batch images, local-view-major)."""
        C, D = za.shape[0], za.shape[2]
        zl = self.project(local_views).view(C, -1, batch, D)
        zl = dist.gather_with_grad(zl, dim=2)                               # every rank's images, per view
        z = torch.cat([za.unsqueeze(1), zb.unsqueeze(1), zl], dim=1)       # (C, 2 + N, B', D)
        return multi_positive_nt_xent(z, self.temperature, validate=False)
