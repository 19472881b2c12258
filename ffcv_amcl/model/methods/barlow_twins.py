"""Barlow Twins: cross-correlation of the two views' standardised projections over the global batch."""
from __future__ import annotations

from types import SimpleNamespace

import torch

from ffcv_amcl import distributed as dist
from ffcv_amcl.losses import AMCLBarlowTwins, barlow_twins
from ffcv_amcl.model.heads import MultiHeadProjector
from ffcv_amcl.model.methods.base import SSLModel, diagonal_masks


class BarlowTwins(SSLModel):
    """BN projector F -> 2048 -> 2048 per head; AMCL's temperature network reads channel vectors of the global
    batch, so its size is fixed by the global batch."""

    method = "barlow_twins"
    amcl_forms = ("ref", "hetero")

    @classmethod
    def defaults(cls, cfg) -> dict:
        return {"loss.temperature": 0.5, "loss.beta": 1e-6, "model.proj_dim": 2048, "model.proj_hidden": 2048,
                "model.pred_hidden": 512}

    def __init__(self, cfg, **kw):
        super().__init__(cfg, **kw)
        m, l = cfg.model, cfg.loss
        self.projector = MultiHeadProjector(self.feature_dim, m.proj_hidden, m.proj_dim, self.heads, "bn_mlp")
        self.lambd = l.barlow_lambda
        self.criterion = (AMCLBarlowTwins(m.proj_dim, self.heads, batch_size=self.global_batch, beta=l.beta,
                                          lambd=l.barlow_lambda, tau_min=l.tau_min, tau_max=l.tau_max,
                                          hidden=l.tau_hidden, form=l.amcl_form, nll_dim=l.nll_dim,
                                          validate=False) if self.amcl else None)

    def forward(self, view_a, view_b):
        B = view_a.shape[0]
        h, z = self.embed(torch.cat([view_a, view_b]))
        za = dist.gather_with_grad(z[:, :B], dim=1)
        zb = dist.gather_with_grad(z[:, B:], dim=1)
        loss = self.criterion(za, zb) if self.amcl else barlow_twins(za, zb, self.lambd, validate=False)
        return self.output(loss, h)

    @torch.no_grad()
    def temperature_pairs(self, view_a, view_b):
        """Channel-vector pairs (l, m): same channel on the diagonal. phi_b takes exactly the training batch."""
        if not self.amcl or view_a.shape[0] != self.criterion.batch_size:
            return None
        n = view_a.shape[0]
        z = self.project(torch.cat([view_a, view_b])).float()
        tau = self.criterion.pair_temperatures(z[:, :n], z[:, n:])
        pos, neg = diagonal_masks(tau.shape[-1], z.device)
        return SimpleNamespace(tau=tau, pos=pos, neg=neg, kind="channels")
