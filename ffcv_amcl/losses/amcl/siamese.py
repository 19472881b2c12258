"""AMCL for the siamese methods without negatives: SimSiam, and BYOL (its target projections in place of sg z)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ffcv_amcl.losses import checks
from ffcv_amcl.losses.amcl.base import AMCLLoss
from ffcv_amcl.losses.amcl.forms import DEFAULT_FORM, SIAMESE
from ffcv_amcl.losses.precision import full_precision
from ffcv_amcl.losses.temperature import make_phi, work_dtype


class AMCLSimSiam(AMCLLoss):
    """AMCL for SimSiam (Eq. 2.2): per head, mean over the batch of
    -1/2 s1/tau1 - 1/2 s2/tau2 + beta*Omega(tau1) + beta*Omega(tau2), summed over heads,
    with s1 = cos(pa, sg zb), tau1 = tau(pa, sg zb) and symmetrically (`ref`). `hetero`: the same similarity
    term with the temperatures detached, plus 1/2 the Gaussian NLL (1 - sg s)/tau + (d/2) log tau of each pair,
    which alone trains phi. phi sees the normalised p and z (z = normalize(g(h)) where the method uses cosine
    similarity). No negatives: last_stats "tau_neg" is NaN.
    """

    FORMS = SIAMESE

    def __init__(self, dim: int, heads: int, beta: float = 1e-4, tau_min: float | None = None, tau_max: float = 2.0,
                 hidden: int = 128, *, form: str = DEFAULT_FORM, nll_dim: float = 2.0, validate: bool = True):
        super().__init__("AMCLSimSiam", dim, heads, beta, tau_min, tau_max, hidden, validate, form, nll_dim)
        self.phi = make_phi(self.dim, self.hidden)

    def forward(self, pa: torch.Tensor, pb: torch.Tensor, za: torch.Tensor, zb: torch.Tensor) -> torch.Tensor:
        named = {"pa": pa, "pb": pb, "za": za, "zb": zb}
        C, B, D = checks.views(self._owner, named, heads=self.heads, dim=self.dim)
        self._finite(named)
        with full_precision(pa):
            dt = work_dtype(self.phi)
            p = F.normalize(torch.cat([pa, pb], 1).to(dt), dim=-1)          # (C, 2B, D)
            z = F.normalize(torch.cat([zb, za], 1).detach().to(dt), dim=-1) # partner of each p, stop-gradient
            s = (p * z).sum(-1)
            tau = self._tau((self.phi(self.phi_input(p)) * self.phi(z)).sum(-1))
            terms = self._form.terms(s, tau, self.settings)                  # (C, 2B)
            self._record(tau.mean(-1), torch.full((C,), float("nan"), device=tau.device), tau_pos=tau, s_pos=s)
            return (terms.sum(-1) / B).sum()

    def _terms(self) -> int:
        return 2 * self.heads      # per head: 2B pair terms divided by B
