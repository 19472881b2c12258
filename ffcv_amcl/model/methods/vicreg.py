"""VICReg: variance-invariance-covariance regularisation of the two views' expander outputs (global batch)."""
from __future__ import annotations

from ffcv_amcl.losses.vicreg import vicreg_terms
from ffcv_amcl.model.heads import MultiHeadExpander
from ffcv_amcl.model.methods.base import SSLModel


class VICReg(SSLModel):
    """Expander F -> 8192 -> 8192 -> 8192 per head (Bardes et al. 2022); the loss's variances and covariances
    are those of the global batch (projections gathered with gradients, as SimCLR and Barlow Twins do)."""

    method = "vicreg"
    amcl_kind = None
    refusals = {"amcl": "VICReg has no AMCL form (no pair similarities to temper): set --model.amcl=0"}
    DEFAULTS = {"loss.temperature": 0.5, "loss.beta": 1e-4, "model.proj_dim": 8192, "model.proj_hidden": 8192,
                "model.pred_hidden": 512}

    def __init__(self, cfg, **kw):
        super().__init__(cfg, **kw)
        m, l = cfg.model, cfg.loss
        self.projector = MultiHeadExpander(self.feature_dim, m.proj_hidden, m.proj_dim, self.heads)
        self.weights = {"sim_weight": l.vicreg_sim, "var_weight": l.vicreg_var, "cov_weight": l.vicreg_cov,
                        "eps": 1e-4}

    def forward(self, view_a, view_b):
        h, z, za, zb = self.embed_global(view_a, view_b)
        return self.output(vicreg_terms(za, zb, **self.weights), h, z)
