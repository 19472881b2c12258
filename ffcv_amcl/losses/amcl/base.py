"""What every AMCL loss shares: its settings checked once at construction, the form it computes, the pair
temperatures, and the record of the last call's temperatures."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ffcv_amcl.errors import UserError
from ffcv_amcl.losses import checks
from ffcv_amcl.losses.amcl.forms import DEFAULT_FORM, FORM_TAU_MIN, PHI_LEARNS_ALONE, Form, Settings
from ffcv_amcl.losses.precision import full_precision
from ffcv_amcl.losses.temperature import pair_tau, work_dtype


class AMCLLoss(nn.Module):
    """Base of the AMCL losses. A subclass names its `FORMS` (one of the tables in forms.py) and the number of
    terms its value adds up (`_terms`, for the lower bound)."""

    FORMS: dict[str, Form] = {}

    def __init__(self, owner: str, dim: int, heads: int, beta: float, tau_min: float | None, tau_max: float,
                 hidden: int, validate: bool, form: str = DEFAULT_FORM, nll_dim: float = 2.0, lambd: float = 0.0):
        super().__init__()
        self._owner = owner
        if form not in self.FORMS:
            raise UserError(f"{owner}: form={form!r} is not one of {', '.join(self.FORMS)}")
        self.form = form
        self._form = self.FORMS[form]
        tau_min = FORM_TAU_MIN[form] if tau_min is None else tau_min
        self.nll_dim = checks.positive(owner, "nll_dim", nll_dim)
        self.dim = checks.positive_int(owner, "dim", dim)
        self.heads = checks.positive_int(owner, "heads", heads)
        self.hidden = checks.positive_int(owner, "hidden", hidden)
        self.beta = checks.non_negative(owner, "beta", beta)
        self.tau_min, self.tau_max = checks.tau_bounds(owner, tau_min, tau_max)
        self.validate = bool(validate)
        self.settings = Settings(self.beta, self.dim, self.nll_dim, checks.non_negative(owner, "lambd", lambd))
        self.last_stats: dict[str, torch.Tensor] = {}
        self.last_pairs: dict[str, torch.Tensor] = {}

    def _record(self, mean_pos: torch.Tensor, mean_neg: torch.Tensor, **pairs: torch.Tensor) -> None:
        """last_stats: per-head means (C,) of the positive and negative temperatures (NaN when there are none);
        last_pairs: the per-pair tensors behind them (temperature health), detached."""
        self.last_stats = {"tau_pos": mean_pos.detach().float(), "tau_neg": mean_neg.detach().float()}
        self.last_pairs = {k: v.detach() for k, v in pairs.items()}

    def _phi_net(self) -> nn.Module:
        return self.phi

    def phi_input(self, x: torch.Tensor) -> torch.Tensor:
        """What phi reads: in `hetero` the vectors detached, so the NLL trains phi alone and the projections learn
        only from the method's own term; `ref` and `post` train temperatures and projections jointly."""
        return x.detach() if self.form in PHI_LEARNS_ALONE else x

    def _tau(self, logit: torch.Tensor) -> torch.Tensor:
        return pair_tau(logit, self.tau_min, self.tau_max)

    def pair_temperatures(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """tau(u_i, v_j) for every pair of every head: u (C, M, D), v (C, M', D) -> (C, M, M'). Contrastive and
        siamese losses L2-normalise first, as the loss does; phi runs once per vector."""
        phi = self._phi_net()
        with full_precision(u):
            dt = work_dtype(phi)
            u, v = F.normalize(u.to(dt), dim=-1), F.normalize(v.to(dt), dim=-1)
            return self._tau(torch.bmm(phi(u), phi(v).transpose(1, 2)))

    def _terms(self) -> int:
        """How many of the form's terms the loss adds up (each averaged term counts once)."""
        return self.heads

    def lower_bound(self) -> float:
        """A value the loss can never go below (per call): -inf for `ref`, which has none."""
        return self._terms() * self._form.floor(self.tau_min, self.nll_dim)

    def _finite(self, named: dict[str, torch.Tensor]) -> None:
        if self.validate:
            checks.finite(self._owner, named)
