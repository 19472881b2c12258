"""AMCL for the contrastive methods: SimCLR (negatives: the other views of the batch), MoCo (each head's queue,
MoCHi's extra negatives) and ASCL's soft targets over the same candidates."""
from __future__ import annotations

import torch

from ffcv_amcl.errors import UserError
from ffcv_amcl.losses import checks
from ffcv_amcl.losses.amcl import candidates
from ffcv_amcl.losses.amcl.base import AMCLLoss
from ffcv_amcl.losses.amcl.forms import CONTRASTIVE, DEFAULT_FORM
from ffcv_amcl.losses.ascl import VARIANTS as ASCL_VARIANTS
from ffcv_amcl.losses.ascl import targets_from_similarities
from ffcv_amcl.losses.precision import full_precision
from ffcv_amcl.losses.temperature import make_phi


class AMCLContrastive(AMCLLoss):
    """AMCL for SimCLR (negatives: the other 2B-2 views) and MoCo (negatives: each head's queue).

    Per head c and anchor i with positive p(i) and the k most similar negatives K (chosen on similarity only):
        l_c(i) = -s+/tau+ + mean_{n in K} s_n/tau_n + beta*Omega(tau+) - beta*sum_{n in K}(log tau_n + 1/tau_n)
        L = sum_c mean_i l_c(i), i over all 2B anchors (both directions).
    That is the `ref` form; `hetero` and `post` (forms.py) replace l_c(i) by a cross-entropy of the positive among
    itself and K. Inputs need not be normalised; they are L2-normalised here. `last_stats` holds per-head means
    of the positive and of the selected negatives' temperatures from the last call.
    """

    FORMS = CONTRASTIVE

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
        self._check_views(za, zb, queue, keys, extra_negatives)
        positives = None if keys is None else torch.cat([keys[1], keys[0]], 1)
        with full_precision(za):
            c = candidates.select(self.phi, torch.cat([za, zb], 1), self.topk, positives=positives,
                                  negatives=queue, extra=extra_negatives, phi_input=self.phi_input)
            return self._combine(c)

    def forward_soft(self, q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, *, K: float = 5,
                     t2: float = 0.05, variant: str = "ascl") -> torch.Tensor:
        """AMCL composed with ASCL's soft targets (hetero and post forms), in ASCL's one direction: anchors q
        (C, B, D), positives the keys k (C, B, D) of the other view, negatives each head's queue (C, Q, D). Each
        anchor's candidates are its positive and its top-k negatives; ASCL's targets are defined over the same
        candidates (key-to-candidate similarities / t2, confidence 1 - H / log k) and replace the one-hot target
        of the cross-entropy. k and queue are detached here."""
        self._check_soft(q, k, queue, K, variant)
        with full_precision(q):
            c = candidates.select(self.phi, q, self.topk, positives=k, negatives=queue, phi_input=self.phi_input,
                                  key_similarities=True)
            with torch.no_grad():
                target = targets_from_similarities(c.s_key, K, t2, variant)
            return self._combine(c, target)

    def _combine(self, c: candidates.Candidates, target: torch.Tensor | None = None) -> torch.Tensor:
        """sum_c mean_i l_c(i) of the form; target (C, N, 1 + k): soft targets over [positive, negatives] (ASCL)
        instead of the positive alone."""
        tau_p, tau_n = self._tau(c.a_pos), self._tau(c.a_neg)
        per_anchor = self._form.terms(c.s_pos, tau_p, c.s_neg, tau_n, self.settings, target)
        self._record(tau_p.mean(-1), tau_n.mean((-2, -1)), tau_pos=tau_p, tau_neg=tau_n, s_pos=c.s_pos)
        return per_anchor.mean(-1).sum()

    # -- input checks: one clear line per mistake, before any work --------------------------------------------------

    def _check_views(self, za, zb, queue, keys, extra) -> None:
        owner = self._owner
        named = {"za": za, "zb": zb}
        C, B, D = checks.views(owner, named, heads=self.heads, dim=self.dim)
        if queue is None:
            if keys is not None or extra is not None:
                raise UserError(f"{owner}: keys and extra_negatives need the MoCo form; pass the queue as "
                                "forward(za, zb, queue, ...)")
            return self._finite(named)
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
        if extra is not None:
            checks.tensor(owner, "extra_negatives", extra, (4,))
            e = extra.shape
            if e[0] != C or e[1] != 2 * B or e[3] != D:
                raise UserError(f"{owner}: extra_negatives has shape {tuple(e)} but must be (heads={C}, 2B={2 * B}, "
                                f"S, dim={D}), row i aligned with the anchors [za; zb]")
            named["extra_negatives"] = extra
        self._finite(named)

    def _check_soft(self, q, k, queue, K, variant) -> None:
        owner = self._owner
        if not self._form.soft_targets:
            raise UserError(f"{owner}: ASCL's soft targets need a softmax over the candidates; the {self.form} form "
                            f"has none: use form={' or '.join(repr(f) for f, v in self.FORMS.items() if v.soft_targets)}")
        if variant not in ASCL_VARIANTS:
            raise UserError(f"{owner}: unknown ASCL variant {variant!r}; choose one of {', '.join(ASCL_VARIANTS)}")
        C, B, D = checks.views(owner, {"q": q, "k": k}, heads=self.heads, dim=self.dim)
        checks.tensor(owner, "queue", queue, (3,))
        if queue.shape[0] != C or queue.shape[2] != D or queue.shape[1] < 2:
            raise UserError(f"{owner}: queue has shape {tuple(queue.shape)} but must be (heads={C}, K>=2, dim={D})")
        n = min(self.topk, queue.shape[1])
        if variant != "ascl" and not (float(K).is_integer() and 1 <= K <= n) or n < 2:
            raise UserError(f"{owner}: ASCL needs at least 2 candidates per anchor and, for {variant}, a whole "
                            f"number K={K!r} of neighbours between 1 and the {n} candidates (topk, queue size)")
        self._finite({"q": q, "k": k, "queue": queue})
