"""AMCL for Barlow Twins (Eq. 2.3): temperatures of pairs of channel vectors, fixed batch size."""
from __future__ import annotations

import torch

from ffcv_amcl.errors import UserError
from ffcv_amcl.losses import checks
from ffcv_amcl.losses.amcl.base import AMCLLoss
from ffcv_amcl.losses.amcl.forms import BARLOW, DEFAULT_FORM
from ffcv_amcl.losses.barlow import cross_correlation
from ffcv_amcl.losses.precision import full_precision
from ffcv_amcl.losses.temperature import make_phi, work_dtype


class AMCLBarlowTwins(AMCLLoss):
    """AMCL for Barlow Twins (Eq. 2.3). Temperatures come from pairs of channel vectors (length B) through phi_b,
    so the batch size is fixed at construction:
        T = tau_min + (tau_max - tau_min) sigmoid(-phi_b(X^T) phi_b(Y^T)^T)              (D x D per head)
        L = sum_c [ sum_l (1 - C_ll/T_ll)^2 + lambd sum_{l!=m} C_lm^2/T_lm
                    + beta sum_l Omega(T_ll) - beta sum_{l!=m} Omega(T_lm) ]                       (`ref`)
    `hetero`: sum_l (1 - C_ll)^2/sg(T_ll) + lambd sum_{l!=m} C_lm^2/sg(T_lm), plus the Gaussian NLL of each entry's
    detached squared error ((1 - C_ll)^2 on the diagonal, C_lm^2 off it), which alone trains phi_b.
    C is the cross-correlation of the batch-standardised projections (unbiased std). last_stats: mean
    diagonal ("tau_pos") and off-diagonal ("tau_neg") temperature per head.
    """

    FORMS = BARLOW

    def __init__(self, dim: int, heads: int, batch_size: int, beta: float = 1e-6, lambd: float = 5e-3,
                 tau_min: float | None = None, tau_max: float = 2.0, hidden: int = 128, *, form: str = DEFAULT_FORM,
                 nll_dim: float = 2.0, validate: bool = True):
        super().__init__("AMCLBarlowTwins", dim, heads, beta, tau_min, tau_max, hidden, validate, form, nll_dim,
                         lambd)
        self.batch_size = checks.positive_int(self._owner, "batch_size", batch_size, minimum=2)
        self.lambd = self.settings.lambd
        self.phi_b = make_phi(self.batch_size, self.hidden)

    def _phi_net(self) -> torch.nn.Module:
        return self.phi_b

    def pair_temperatures(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """T_lm = tau(channel l of u, channel m of v): u, v (C, B, D) projections -> (C, D, D)."""
        with full_precision(u):
            dt = work_dtype(self.phi_b)
            a, b = self.phi_b(u.to(dt).transpose(1, 2)), self.phi_b(v.to(dt).transpose(1, 2))
            return self._tau(torch.bmm(a, b.transpose(1, 2)))

    def _terms(self) -> int:
        return self.heads * self.dim * self.dim   # one NLL term per entry of each head's D x D matrix

    def forward(self, za: torch.Tensor, zb: torch.Tensor) -> torch.Tensor:
        named = {"za": za, "zb": zb}
        C, B, D = checks.views(self._owner, named, heads=self.heads, dim=self.dim)
        if B != self.batch_size:
            raise UserError(f"{self._owner}: batch size {B} differs from batch_size={self.batch_size} the loss was "
                            "built with (phi_b acts on length-B channel vectors); keep the batch size fixed "
                            "(drop_last=True) or rebuild the loss")
        self._finite(named)
        with full_precision(za):
            dt = work_dtype(self.phi_b)
            x, y = za.to(dt), zb.to(dt)
            cc = cross_correlation(x, y)                                        # (C, D, D)
            t = self.pair_temperatures(self.phi_input(x), self.phi_input(y))
            eye = torch.eye(D, dtype=torch.bool, device=t.device)
            per_head = self._form.terms(cc, t, eye, self.settings)
            self._record_channels(cc, t, eye)
            return per_head.sum()

    def _record_channels(self, cc: torch.Tensor, t: torch.Tensor, eye: torch.Tensor) -> None:
        """Mean same-channel and cross-channel temperature per head; health from a fixed stride of at most 64
        cross-channel pairs per channel, not all D(D-1)."""
        C, D = t.shape[0], t.shape[-1]
        td = t.diagonal(dim1=-2, dim2=-1)
        off_mean = t.masked_fill(eye, 0.0).sum((-2, -1)) / max(D * D - D, 1)
        off_diag = t.flatten(1)[:, 1:].view(C, D - 1, D + 1)[:, :, :-1].reshape(C, D, D - 1)  # no sync
        self._record(td.mean(-1), off_mean, tau_pos=td, tau_neg=off_diag[:, :, ::max(1, (D - 1) // 64)],
                     s_pos=cc.diagonal(dim1=-2, dim2=-1))
