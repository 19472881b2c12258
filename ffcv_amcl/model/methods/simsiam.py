"""SimSiam: projector + predictor, stop-gradient on the projections; AMCL: per-pair temperature on cos(p, sg z)."""
from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F

from ffcv_amcl.losses import AMCLSimSiam, negative_cosine
from ffcv_amcl.model.heads import MultiHeadPredictor, MultiHeadProjector
from ffcv_amcl.model.methods.base import SSLModel, diagonal_masks


class SimSiam(SSLModel):
    """BN projector F -> 2048 -> 2048 and a bottleneck predictor (2048 -> 512 -> 2048) per head."""

    method = "simsiam"
    amcl_forms = ("ref", "hetero")

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
        self.criterion = self._predictor_amcl_loss(m.proj_dim) if self.amcl else None

    def _predictor_amcl_loss(self, dim: int) -> AMCLSimSiam:
        l = self.lcfg
        return AMCLSimSiam(dim, self.heads, beta=l.beta, tau_min=l.tau_min, tau_max=l.tau_max, hidden=l.tau_hidden,
                           form=l.amcl_form, nll_dim=l.nll_dim, validate=False)

    def targets(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """What the predictions regress: the online projections themselves (stop-gradient in the loss)."""
        return z

    def forward(self, view_a, view_b):
        B = view_a.shape[0]
        x = torch.cat([view_a, view_b])
        h, z = self.embed(x)
        p = self.predict(z)
        t = self.targets(x, z)
        pa, pb, ta, tb = p[:, :B], p[:, B:], t[:, :B], t[:, B:]
        loss = self.criterion(pa, pb, ta, tb) if self.amcl else self.classic_loss(pa, pb, ta, tb)
        return self.output(loss, h)

    def classic_loss(self, pa, pb, ta, tb):
        return negative_cosine(pa, pb, ta, tb, validate=False)

    @torch.no_grad()
    def temperature_pairs(self, view_a, view_b):
        """tau(p of one view, target of the other view) for every pair; positives: the pairs in the loss."""
        if not self.amcl:
            return None
        n = view_a.shape[0]
        x = torch.cat([view_a, view_b])
        z = self.project(x)
        p = F.normalize(self.predict(z).float(), dim=-1)
        partner = F.normalize(self.targets(x, z).float().roll(n, 1), dim=-1)   # p of view a pairs with view b
        pos, neg = diagonal_masks(2 * n, x.device)
        return SimpleNamespace(tau=self.criterion.pair_temperatures(p, partner), pos=pos, neg=neg,
                               kind="predictor")
