"""MoCo v2, symmetrised: query encoder, momentum key encoder, one queue of keys per head; MoCHi and ASCL as the
strategies it composes (moco_strategies.py)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ffcv_amcl import distributed as dist
from ffcv_amcl.errors import check
from ffcv_amcl.model.heads import MultiHeadProjector
from ffcv_amcl.model.methods import moco_strategies
from ffcv_amcl.model.methods.base import SSLModel, ema_, feature_dim, frozen_copy


class MoCo(SSLModel):
    """Options on this path: MoCHi (synthetic hard negatives from each query's hardest queue members, after
    `loss.mochi_start` epochs; never enqueued) and ASCL (soft targets over the queue; one direction, query
    from view a, key from view b, which may be weakly augmented via data.augs_b). Multi-crop local views are
    extra queries (one batch through the query encoder) against the global views' keys; they are not enqueued."""

    method = "moco"
    amcl_kind = "contrastive"
    options = ("mochi", "ascl")
    local_views = True
    DEFAULTS = {"loss.temperature": 0.1, "loss.beta": 1e-4, "model.proj_dim": 128, "model.proj_hidden": feature_dim,
                "model.pred_hidden": 512}

    @classmethod
    def check_config(cls, cfg, world_size: int) -> None:
        super().check_config(cfg, world_size)
        l = cfg.loss
        mochi, ascl = l.mochi_n_hard > 0, bool(l.ascl)
        check(not (mochi and ascl), "loss.mochi_n_hard and loss.ascl are separate methods: enable one of them")
        if mochi:
            check(l.mochi_s1 >= 0 and l.mochi_s2 >= 0,
                  f"loss.mochi_s1={l.mochi_s1}, loss.mochi_s2={l.mochi_s2}: mix counts cannot be negative")
            check(l.mochi_n_hard <= l.queue_size, f"loss.mochi_n_hard={l.mochi_n_hard} exceeds loss.queue_size="
                                                  f"{l.queue_size}: pick at most the queue length")
        if ascl and cfg.model.amcl:    # ASCL's targets over each query's positive and top-k AMCL candidates
            n = min(l.topk, l.queue_size)
            check(n >= 2, f"loss.topk={l.topk}: ASCL's confidence 1 - H/log k needs at least 2 candidates per query")
            check(l.ascl_variant == "ascl" or (float(l.ascl_k).is_integer() and 1 <= l.ascl_k <= n),
                  f"loss.ascl_k={l.ascl_k}: the {l.ascl_variant} variant takes a whole number of neighbours between 1 "
                  f"and the {n} candidates per query (loss.topk)")
        check(not cfg.data.local_crops or not (cfg.model.amcl or mochi or ascl),
              "MoCo's local queries join its InfoNCE, while AMCL, MoCHi and ASCL pair each query with one key: use "
              "--model.amcl=0 without MoCHi or ASCL with --data.local_crops, or --data.local_crops=0")
        per_step = cfg.training.batch_size * world_size * (1 if ascl else 2)   # keys enqueued per step
        check(l.queue_size >= per_step, f"loss.queue_size={l.queue_size} is smaller than the {per_step} keys "
                                        f"enqueued per step: raise the queue or lower training.batch_size")

    def __init__(self, cfg, **kw):
        super().__init__(cfg, **kw)
        m, l = cfg.model, cfg.loss
        self.projector = MultiHeadProjector(self.feature_dim, m.proj_hidden, m.proj_dim, self.heads, "mlp")
        self.key_backbone = frozen_copy(self.backbone)
        self.key_projector = frozen_copy(self.projector)
        self.criterion = self.amcl_criterion(cfg)
        self.momentum = l.momentum
        self.objective = moco_strategies.objective(l, self.criterion)
        self.mixing = moco_strategies.negatives_mixing(l, self.seed)
        g = torch.Generator().manual_seed(cfg.training.seed + 7919)  # same queue on every rank
        queue = F.normalize(torch.randn(self.heads, l.queue_size, m.proj_dim, generator=g), dim=-1)
        self.register_buffer("queue", queue)
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def encoders(self, target: bool):
        return (self.key_backbone, self.key_projector) if target else (self.backbone, self.projector)

    @torch.no_grad()
    def momentum_update(self) -> None:
        ema_(self.key_backbone, self.backbone, self.momentum)
        ema_(self.key_projector, self.projector, self.momentum)

    @torch.no_grad()
    def _keys(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.project(x, target=True).float(), dim=-1)

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor) -> None:
        """keys (C, n, D) of this rank; the queue takes the keys of all ranks, rank order."""
        keys = dist.gather_no_grad(keys, dim=1)
        K, n = self.queue.shape[1], keys.shape[1]
        idx = (self.queue_ptr + torch.arange(n, device=keys.device)) % K
        self.queue.index_copy_(1, idx, keys.to(self.queue.dtype))
        self.queue_ptr.copy_((self.queue_ptr + n) % K)

    def forward(self, view_a, view_b, local_views=None):
        queue = self.queue.clone()          # enqueued below; autograd needs the version it saw
        queries, keys = self.objective.views(view_a, view_b)
        h, q = self.embed(queries)
        k = self._keys(keys)
        extra = self.mixing(q, queue, step=self.step, epoch=self.epoch)
        if local_views is None:
            loss = self.objective(q, k, queue, extra)
        else:
            loss = self.objective(q, k, queue, extra, local=self.project(local_views))
        self._enqueue(k)
        # one-way (ASCL): views b are only keys, so their projections are the momentum encoder's
        return self.output(loss, h, q if q.shape[1] == 2 * view_a.shape[0] else torch.cat([q, k], dim=1))
