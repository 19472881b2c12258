"""SimSiam: projector + predictor, stop-gradient on the projections; AMCL: per-pair temperature on cos(p, sg z)."""
from __future__ import annotations

import torch

from ffcv_amcl.losses import multi_view_negative_cosine, negative_cosine
from ffcv_amcl.model.heads import MultiHeadPredictor, MultiHeadProjector
from ffcv_amcl.model.methods.base import SSLModel


class SimSiam(SSLModel):
    """BN projector F -> 2048 -> 2048 and a bottleneck predictor (2048 -> 512 -> 2048) per head. With multi-crop
    local views (one batch through the online encoder) every view predicts the other global views' targets."""

    method = "simsiam"
    amcl_kind = "siamese"
    local_views = True
    refusals = {"amcl_local_views": "AMCL's siamese form tempers each view's one prediction pair, and local crops "
                                    "give it several: use --model.amcl=0 with --data.local_crops, or "
                                    "--data.local_crops=0 with AMCL"}
    DEFAULTS = {"loss.temperature": 0.5, "loss.beta": 1e-4, "model.proj_dim": 2048, "model.proj_hidden": 2048,
                "model.pred_hidden": lambda cfg: (cfg.model.proj_dim or 2048) // 4}     # the bottleneck

    def __init__(self, cfg, **kw):
        super().__init__(cfg, **kw)
        m = cfg.model
        self.projector = MultiHeadProjector(self.feature_dim, m.proj_hidden, m.proj_dim, self.heads, "bn_mlp")
        self.predictor = MultiHeadPredictor(m.proj_dim, m.pred_hidden, self.heads)
        self.criterion = self.amcl_criterion(cfg)

    def targets(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """What the predictions regress: the online projections themselves (stop-gradient in the loss)."""
        return z

    def forward(self, view_a, view_b, local_views=None):
        B = view_a.shape[0]
        x = torch.cat([view_a, view_b])
        h, z = self.embed(x)
        p = self.predictor(z)
        t = self.targets(x, z)
        if local_views is not None:
            C, D = p.shape[0], p.shape[2]
            p_local = self.predictor(self.project(local_views)).view(C, -1, B, D)   # local-view-major
            p_all = torch.cat([p.view(C, 2, B, D), p_local], dim=1)
            return self.output(self.multi_crop_loss(p_all, t.view(C, 2, B, D)), h, z)
        pa, pb, ta, tb = p[:, :B], p[:, B:], t[:, :B], t[:, B:]
        loss = self.criterion(pa, pb, ta, tb) if self.amcl else self.classic_loss(pa, pb, ta, tb)
        return self.output(loss, h, z)

    def classic_loss(self, pa, pb, ta, tb):
        return negative_cosine(pa, pb, ta, tb, validate=False)

    def multi_crop_loss(self, p, t):
        """p (C, 2 + N, B, D) predictions of every view, t (C, 2, B, D) the global views' targets."""
        return multi_view_negative_cosine(p, t, validate=False)
