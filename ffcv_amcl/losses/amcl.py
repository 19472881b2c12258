"""AMCL: multi-head losses with a learned temperature per pair (docs/amcl.md gives the formulation).

All C heads are one batched computation: views are stacked as (C, 2B, D), every pair similarity of every
head is one batched product (einsum 'cid,cjd->cij', run as bmm), phi runs once on all C*2B rows, pair
temperatures are one more batched product of phi outputs
(<phi(u), phi(v)> factorises), and the hardest negatives are one top-k. There is no loop over heads.
phi, Omega and the division by tau run in float32 with autocast off (1/tau reaches 1/tau_min = 1e5).

Forms (`form=`; docs/amcl.md, "Why `ref` is unbounded"):
  ref     the reference code's formulas, exactly (kept to reproduce it; unbounded below: every temperature is
          driven to tau_min);
  hetero  heteroscedastic: phi learns only from the Gaussian negative log-likelihood of the positive pairs with
          the similarity detached, (1 - sg s+)/tau+ + (d/2) log tau+ (optimum tau+ = 2(1 - s+)/d: a harder
          positive gets a higher temperature); the method's own loss uses every temperature detached
          (contrastive: cross-entropy of the positive among itself and the top-k negatives). Bounded below;
  post    posterior: cross-entropy of the positive among itself and the top-k with logits s/tau - beta Omega(tau),
          temperatures trained through it (contrastive methods only). Bounded below by 0.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ffcv_amcl.errors import UserError
from ffcv_amcl.losses import checks
from ffcv_amcl.losses.ascl import VARIANTS as ASCL_VARIANTS
from ffcv_amcl.losses.ascl import targets_from_similarities
from ffcv_amcl.losses.barlow import cross_correlation
from ffcv_amcl.losses.precision import full_precision
from ffcv_amcl.losses.temperature import gaussian_nll, make_phi, omega, pair_tau, work_dtype


FORMS = ("ref", "hetero", "post")
# Lowest temperature of each form when the config leaves it open: the spec's 1e-5 for ref (kept exact); bounded
# forms at 0.02, below which only positives with s+ > 0.98 would put their optimum (benchmarks/studies/amcl_study.py).
FORM_TAU_MIN = {"ref": 1e-5, "hetero": 0.02, "post": 0.02}
DEFAULT_FORM = "hetero"      # the form the study supports (BENCHMARKS.md, AMCL study); config.py's default too


class _AMCLBase(nn.Module):
    """Shared constructor checks, the temperatures of pairs, and the last_stats record."""

    forms = FORMS

    def __init__(self, owner: str, dim: int, heads: int, beta: float, tau_min: float, tau_max: float,
                 hidden: int, validate: bool, form: str = DEFAULT_FORM, nll_dim: float = 2.0):
        super().__init__()
        self._owner = owner
        if form not in self.forms:
            raise UserError(f"{owner}: form={form!r} is not one of {', '.join(self.forms)}")
        self.form = form
        tau_min = FORM_TAU_MIN[form] if tau_min is None else tau_min
        self.nll_dim = checks.positive(owner, "nll_dim", nll_dim)
        self.dim = checks.positive_int(owner, "dim", dim)
        self.heads = checks.positive_int(owner, "heads", heads)
        self.hidden = checks.positive_int(owner, "hidden", hidden)
        self.beta = checks.non_negative(owner, "beta", beta)
        self.tau_min, self.tau_max = checks.tau_bounds(owner, tau_min, tau_max)
        self.validate = bool(validate)
        self.last_stats: dict[str, torch.Tensor] = {}

    def _record(self, mean_pos: torch.Tensor, mean_neg: torch.Tensor, **pairs: torch.Tensor) -> None:
        """last_stats: per-head means (C,) of the positive and negative temperatures (NaN when there are none);
        last_pairs: the per-pair tensors behind them (temperature health), detached."""
        self.last_stats = {"tau_pos": mean_pos.detach().float(), "tau_neg": mean_neg.detach().float()}
        self.last_pairs = {k: v.detach() for k, v in pairs.items()}

    def _phi_net(self) -> nn.Module:
        return self.phi

    def _phi_input(self, x: torch.Tensor) -> torch.Tensor:
        """What phi reads: in `hetero` the vectors detached, so the NLL trains phi alone and the projections learn
        only from the method's own term; `ref` and `post` train temperatures and projections jointly."""
        return x.detach() if self.form == "hetero" else x

    def pair_temperatures(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """tau(u_i, v_j) for every pair of every head: u (C, M, D), v (C, M', D) -> (C, M, M'). Contrastive and
        SimSiam forms L2-normalise first, as the loss does; phi runs once per vector."""
        phi = self._phi_net()
        with full_precision(u):
            dt = work_dtype(phi)
            u, v = F.normalize(u.to(dt), dim=-1), F.normalize(v.to(dt), dim=-1)
            return pair_tau(torch.bmm(phi(u), phi(v).transpose(1, 2)), self.tau_min, self.tau_max)

    def lower_bound(self) -> float:
        """A value the loss can never go below (per call): -inf for `ref`, which has none."""
        if self.form == "hetero":
            return self._bound_terms() * 0.5 * self.nll_dim * math.log(self.tau_min) + self._hetero_floor()
        return 0.0 if self.form == "post" else float("-inf")

    def _bound_terms(self) -> int:
        return self.heads          # one NLL term per anchor, averaged over anchors, summed over heads

    def _hetero_floor(self) -> float:
        return 0.0                 # the method's own term with detached temperatures is >= this

    def _finite(self, named: dict[str, torch.Tensor]) -> None:
        if self.validate:
            checks.finite(self._owner, named)


class AMCLContrastive(_AMCLBase):
    """AMCL for SimCLR (negatives: the other 2B-2 views) and MoCo (negatives: each head's queue).

    Per head c and anchor i with positive p(i) and the k most similar negatives K (chosen on similarity only):
        l_c(i) = -s+/tau+ + mean_{n in K} s_n/tau_n + beta*Omega(tau+) - beta*sum_{n in K}(log tau_n + 1/tau_n)
        L = sum_c mean_i l_c(i), i over all 2B anchors (both directions).
    That is the `ref` form; `hetero` and `post` (module docstring) replace l_c(i) by a cross-entropy of the
    positive among itself and K. Inputs need not be normalised; they are L2-normalised here. `last_stats` holds
    per-head means of the positive and of the selected negatives' temperatures from the last call.
    """

    def __init__(self, dim: int, heads: int, beta: float = 1e-4, topk: int = 100, tau_min: float | None = None,
                 tau_max: float = 2.0, hidden: int = 128, *, form: str = DEFAULT_FORM, nll_dim: float = 2.0,
                 validate: bool = True):
        super().__init__("AMCLContrastive", dim, heads, beta, tau_min, tau_max, hidden, validate, form, nll_dim)
        self.topk = checks.positive_int(self._owner, "topk", topk)
        self.phi = make_phi(self.dim, self.hidden)

    def forward(self, za: torch.Tensor, zb: torch.Tensor, queue: torch.Tensor | None = None, *,
                keys: tuple[torch.Tensor, torch.Tensor] | None = None,
                extra_negatives: torch.Tensor | None = None) -> torch.Tensor:
        """SimCLR form `forward(za, zb)`; MoCo form `forward(za, zb, queue)`.

        za, zb: (C, B, D) projections of views a and b. queue: (C, K, D) negatives of each head (detached here).
        keys=(ka, kb): momentum-encoder keys (C, B, D), detached here; anchors za take positive kb and anchors
        zb take positive ka. Without keys the positive of za[i] is zb[i] and vice versa.
        extra_negatives (MoCo form only): (C, 2B, S, D) per-anchor negatives (e.g. MoCHi's synthetic ones),
        row i aligned with the anchors [za; zb] (i < B: za[i], else zb[i-B]); they join that anchor's queue
        negatives before the top-k, are normalised and detached here.
        """
        owner = self._owner
        named = {"za": za, "zb": zb}
        C, B, D = checks.views(owner, named, heads=self.heads, dim=self.dim)
        if queue is None:
            if keys is not None or extra_negatives is not None:
                raise UserError(f"{owner}: keys and extra_negatives need the MoCo form; pass the queue as "
                                "forward(za, zb, queue, ...)")
            self._finite(named)
            return self._simclr(za, zb)
        checks.tensor(owner, "queue", queue, (3,))
        if queue.shape[0] != C or queue.shape[2] != D or queue.shape[1] < 1:
            raise UserError(f"{owner}: queue has shape {tuple(queue.shape)} but must be (heads={C}, K>=1, dim={D}); "
                            "keep one queue per head")
        named["queue"] = queue
        if keys is not None:
            if not isinstance(keys, (tuple, list)) or len(keys) != 2:
                raise UserError(f"{owner}: keys must be a pair (ka, kb) of (C, B, D) tensors")
            checks.views(owner, {"za": za, "ka": keys[0], "kb": keys[1]})
            named.update(ka=keys[0], kb=keys[1])
        if extra_negatives is not None:
            checks.tensor(owner, "extra_negatives", extra_negatives, (4,))
            e = extra_negatives.shape
            if e[0] != C or e[1] != 2 * B or e[3] != D:
                raise UserError(f"{owner}: extra_negatives has shape {tuple(e)} but must be (heads={C}, 2B={2 * B}, "
                                f"S, dim={D}), row i aligned with the anchors [za; zb]")
            named["extra_negatives"] = extra_negatives
        self._finite(named)
        return self._moco(za, zb, queue, keys, extra_negatives)

    # -- the two forms: both reduce to (s+, <phi,phi>+, negative similarities, negative phi logits) --------------

    def _simclr(self, za: torch.Tensor, zb: torch.Tensor) -> torch.Tensor:
        B = za.shape[1]
        with full_precision(za):
            dt = work_dtype(self.phi)
            z = F.normalize(torch.cat([za, zb], 1).to(dt), dim=-1)          # (C, 2B, D)
            p = self.phi(self._phi_input(z))                                  # phi once on all C*2B rows
            # einsum('cid,cjd->cij') written as bmm: same kernel, less host overhead per call on the GPU
            s_all = torch.bmm(z, z.transpose(1, 2))                           # all pairs of all heads
            a_all = torch.bmm(p, p.transpose(1, 2))                           # <phi(u), phi(v)> of all pairs
            s_pos = (z * z.roll(B, 1)).sum(-1)                                # positive of i is (i + B) mod 2B
            a_pos = (p * p.roll(B, 1)).sum(-1)
            n = 2 * B
            k = min(self.topk, n - 2)
            with torch.no_grad():
                candidates = s_all.detach().clone()
                for offset in (0, B, -B):                                     # self and positive are not negatives
                    candidates.diagonal(offset, dim1=-2, dim2=-1).fill_(float("-inf"))
                idx = candidates.topk(k, dim=-1).indices
            return self._combine(s_pos, a_pos, s_all.gather(-1, idx), a_all.gather(-1, idx))

    def _moco(self, za, zb, queue, keys, extra) -> torch.Tensor:
        B = za.shape[1]
        with full_precision(za):
            dt = work_dtype(self.phi)
            q = F.normalize(torch.cat([za, zb], 1).to(dt), dim=-1)          # anchors (C, 2B, D)
            pq = self.phi(self._phi_input(q))
            if keys is None:
                pos, ppos = q.roll(B, 1), pq.roll(B, 1)                       # za <-> zb
            else:
                pos = F.normalize(torch.cat([keys[1], keys[0]], 1).detach().to(dt), dim=-1)
                ppos = self.phi(pos)
            s_pos = (q * pos).sum(-1)
            a_pos = (pq * ppos).sum(-1)
            neg = F.normalize(queue.detach().to(dt), dim=-1)                  # (C, K, D)
            s_neg = torch.bmm(q, neg.transpose(1, 2))                         # einsum('cid,ckd->cik')
            a_neg = torch.bmm(pq, self.phi(neg).transpose(1, 2))
            if extra is not None:
                ex = F.normalize(extra.detach().to(dt), dim=-1)               # (C, 2B, S, D)
                s_neg = torch.cat([s_neg, torch.einsum("cid,cisd->cis", q, ex)], -1)
                a_neg = torch.cat([a_neg, torch.einsum("cid,cisd->cis", pq, self.phi(ex))], -1)
            k = min(self.topk, s_neg.shape[-1])
            with torch.no_grad():
                idx = s_neg.detach().topk(k, dim=-1).indices
            return self._combine(s_pos, a_pos, s_neg.gather(-1, idx), a_neg.gather(-1, idx))

    def forward_soft(self, q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, *, K: float = 5,
                     t2: float = 0.05, variant: str = "ascl") -> torch.Tensor:
        """AMCL composed with ASCL's soft targets (hetero and post forms), in ASCL's one direction: anchors q
        (C, B, D), positives the keys k (C, B, D) of the other view, negatives each head's queue (C, Q, D). Each
        anchor's candidates are its positive and its top-k negatives; ASCL's targets are defined over the same
        candidates (key-to-candidate similarities / t2, confidence 1 - H / log k) and replace the one-hot target
        of the cross-entropy. k and queue are detached here."""
        owner = self._owner
        if self.form == "ref":
            raise UserError(f"{owner}: ASCL's soft targets need a softmax over the candidates; the ref form has "
                            "none: use form='hetero' or 'post'")
        if variant not in ASCL_VARIANTS:
            raise UserError(f"{owner}: unknown ASCL variant {variant!r}; choose one of {', '.join(ASCL_VARIANTS)}")
        C, B, D = checks.views(owner, {"q": q, "k": k}, heads=self.heads, dim=self.dim)
        checks.tensor(owner, "queue", queue, (3,))
        if queue.shape[0] != C or queue.shape[2] != D or queue.shape[1] < 2:
            raise UserError(f"{owner}: queue has shape {tuple(queue.shape)} but must be (heads={C}, K>=2, dim={D})")
        self._finite({"q": q, "k": k, "queue": queue})
        with full_precision(q):
            dt = work_dtype(self.phi)
            qn = F.normalize(q.to(dt), dim=-1)
            kn, neg = (F.normalize(x.detach().to(dt), dim=-1) for x in (k, queue))
            pq, pk, pn = self.phi(self._phi_input(qn)), self.phi(kn), self.phi(neg)
            s_neg, a_neg = torch.bmm(qn, neg.transpose(1, 2)), torch.bmm(pq, pn.transpose(1, 2))
            n = min(self.topk, s_neg.shape[-1])
            if variant != "ascl" and not (float(K).is_integer() and 1 <= K <= n) or n < 2:
                raise UserError(f"{owner}: ASCL needs at least 2 candidates per anchor and, for {variant}, a whole "
                                f"number K={K!r} of neighbours between 1 and the {n} candidates (topk, queue size)")
            with torch.no_grad():
                idx = s_neg.detach().topk(n, dim=-1).indices
                target = targets_from_similarities(torch.bmm(kn, neg.transpose(1, 2)).gather(-1, idx), K, t2,
                                                   variant)
            return self._combine((qn * kn).sum(-1), (pq * pk).sum(-1), s_neg.gather(-1, idx), a_neg.gather(-1, idx),
                                 target=target)

    def _combine(self, s_pos, a_pos, s_neg, a_neg, target=None) -> torch.Tensor:
        """s_pos, a_pos: (C, N); s_neg, a_neg: (C, N, k) of the selected negatives -> sum_c mean_i l_c(i).
        target (C, N, 1 + k): soft targets over [positive, negatives] (ASCL) instead of the positive alone."""
        tau_p = pair_tau(a_pos, self.tau_min, self.tau_max)
        tau_n = pair_tau(a_neg, self.tau_min, self.tau_max)
        if self.form == "ref":
            per_anchor = (-s_pos / tau_p + (s_neg / tau_n).mean(-1)
                          + self.beta * omega(tau_p, self.dim)
                          - self.beta * (torch.log(tau_n) + 1.0 / tau_n).sum(-1))
        elif self.form == "post":
            x_p = s_pos / tau_p - self.beta * omega(tau_p, self.dim)
            per_anchor = _cross_entropy(x_p, s_neg / tau_n - self.beta * omega(tau_n, self.dim), target)
        else:
            per_anchor = (_cross_entropy(s_pos / tau_p.detach(), s_neg / tau_n.detach(), target)
                          + gaussian_nll(1.0 - s_pos.detach(), tau_p, self.nll_dim))
        self._record(tau_p.mean(-1), tau_n.mean((-2, -1)), tau_pos=tau_p, tau_neg=tau_n, s_pos=s_pos)
        return per_anchor.mean(-1).sum()


def _cross_entropy(x_pos: torch.Tensor, x_neg: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of the logits [positive, negatives] (x_pos (...), x_neg (..., k) -> (...)) with the one-hot
    target on the positive, or with `target` (..., 1 + k) summing to 1. Never below 0."""
    logits = torch.cat([x_pos.unsqueeze(-1), x_neg], -1)
    if target is None:
        return torch.logsumexp(logits, -1) - x_pos
    return -(target * torch.log_softmax(logits, -1)).sum(-1)


class AMCLSimSiam(_AMCLBase):
    """AMCL for SimSiam (Eq. 2.2): per head, mean over the batch of
    -1/2 s1/tau1 - 1/2 s2/tau2 + beta*Omega(tau1) + beta*Omega(tau2), summed over heads,
    with s1 = cos(pa, sg zb), tau1 = tau(pa, sg zb) and symmetrically (`ref`). `hetero`: the same similarity
    term with the temperatures detached, plus 1/2 the Gaussian NLL (1 - sg s)/tau + (d/2) log tau of each pair,
    which alone trains phi. phi sees the normalised p and z (z = normalize(g(h)) where the method uses cosine
    similarity). No negatives: last_stats "tau_neg" is NaN.
    """

    forms = ("ref", "hetero")

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
            tau = pair_tau((self.phi(self._phi_input(p)) * self.phi(z)).sum(-1), self.tau_min, self.tau_max)
            if self.form == "ref":
                terms = -0.5 * s / tau + self.beta * omega(tau, self.dim)    # (C, 2B)
            else:
                terms = -0.5 * s / tau.detach() + 0.5 * gaussian_nll(1.0 - s.detach(), tau, self.nll_dim)
            self._record(tau.mean(-1), torch.full((C,), float("nan"), device=tau.device), tau_pos=tau, s_pos=s)
            return (terms.sum(-1) / B).sum()

    def _hetero_floor(self) -> float:
        return -self.heads / self.tau_min      # -1/2 s/tau per direction, s <= 1, tau >= tau_min


class AMCLBarlowTwins(_AMCLBase):
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

    forms = ("ref", "hetero")

    def __init__(self, dim: int, heads: int, batch_size: int, beta: float = 1e-6, lambd: float = 5e-3,
                 tau_min: float | None = None, tau_max: float = 2.0, hidden: int = 128, *, form: str = DEFAULT_FORM,
                 nll_dim: float = 2.0, validate: bool = True):
        super().__init__("AMCLBarlowTwins", dim, heads, beta, tau_min, tau_max, hidden, validate, form, nll_dim)
        self.batch_size = checks.positive_int(self._owner, "batch_size", batch_size, minimum=2)
        self.lambd = checks.non_negative(self._owner, "lambd", lambd)
        self.phi_b = make_phi(self.batch_size, self.hidden)

    def _phi_net(self) -> nn.Module:
        return self.phi_b

    def pair_temperatures(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """T_lm = tau(channel l of u, channel m of v): u, v (C, B, D) projections -> (C, D, D)."""
        with full_precision(u):
            dt = work_dtype(self.phi_b)
            a, b = self.phi_b(u.to(dt).transpose(1, 2)), self.phi_b(v.to(dt).transpose(1, 2))
            return pair_tau(torch.bmm(a, b.transpose(1, 2)), self.tau_min, self.tau_max)

    def _bound_terms(self) -> int:
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
            t = self.pair_temperatures(self._phi_input(x), self._phi_input(y))
            eye = torch.eye(D, dtype=torch.bool, device=t.device)
            cd, td = cc.diagonal(dim1=-2, dim2=-1), t.diagonal(dim1=-2, dim2=-1)
            if self.form == "ref":
                on = ((1.0 - cd / td) ** 2).sum(-1)
                off = (cc.pow(2) / t).masked_fill(eye, 0.0).sum((-2, -1))
                reg = self.beta * (omega(td, self.dim).sum(-1)
                                   - omega(t, self.dim).masked_fill(eye, 0.0).sum((-2, -1)))
            else:
                on = ((1.0 - cd).pow(2) / td.detach()).sum(-1)
                off = (cc.pow(2) / t.detach()).masked_fill(eye, 0.0).sum((-2, -1))
                residual = torch.where(eye, (1.0 - cc).pow(2), cc.pow(2)).detach()
                reg = gaussian_nll(residual, t, self.nll_dim).sum((-2, -1))
            off_mean = t.masked_fill(eye, 0.0).sum((-2, -1)) / max(D * D - D, 1)
            off_diag = t.flatten(1)[:, 1:].view(C, D - 1, D + 1)[:, :, :-1].reshape(C, D, D - 1)  # no sync
            # health from a fixed stride of at most 64 cross-channel pairs per channel, not all D(D-1)
            self._record(td.mean(-1), off_mean, tau_pos=td, tau_neg=off_diag[:, :, ::max(1, (D - 1) // 64)], s_pos=cd)
            return (on + self.lambd * off + reg).sum()
