"""One nn.Module per self-supervised method: backbone + C projection heads (+ predictor, momentum encoder,
per-head queues) + loss, with AMCL on or off. Every method answers the same call:

    loss, stats = model(view_a, view_b)      # also model.compute_loss(view_a, view_b)
    model.momentum_update()                  # after optimizer.step(): EMA of MoCo keys / BYOL target

`forward` is the loss so that DistributedDataParallel sees the whole computation. `stats` holds detached
tensors only (no host sync): per-head `tau_pos`/`tau_neg` (C,) when AMCL is on. `model.features(x)` is the
backbone feature the kNN monitor and the linear probe use.

Across processes (torchrun): SimCLR and Barlow Twins gather the projections of every rank with gradients
(the loss is that of the global batch on every rank), MoCo gathers keys before they enter the queues, and
SimSiam/BYOL are per-sample losses that DDP's gradient average already makes global. Both views go
through the backbone as one concatenated batch (one kernel launch per layer instead of two).
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from ffcv_amcl import distributed as dist
from ffcv_amcl.errors import UserError
from ffcv_amcl.losses import (AMCLBarlowTwins, AMCLContrastive, AMCLSimSiam, ascl_loss, barlow_twins, byol_loss,
                              info_nce_queue, mix_hard_negatives, negative_cosine, nt_xent)
from ffcv_amcl.model.backbone import make_backbone
from ffcv_amcl.model.heads import MultiHeadPredictor, MultiHeadProjector


class SSLModel(nn.Module):
    """Base: a backbone and the bookkeeping every method shares."""

    method = "?"

    def __init__(self, cfg, *, image_size: int, global_batch: int):
        super().__init__()
        m, self.lcfg = cfg.model, cfg.loss
        self.heads, self.amcl = m.heads, bool(m.amcl)
        self.backbone = make_backbone(m.arch, stem=m.stem, image_size=image_size)
        self.feature_dim = self.backbone.feature_dim
        self.global_batch = global_batch
        self.seed = cfg.training.seed
        # Set by the trainer before each step (schedules inside the model: BYOL momentum, MoCHi warm-up).
        self.step, self.total_steps, self.epoch = 0, 1, 0

    def set_progress(self, *, step: int, total_steps: int, epoch: int) -> None:
        self.step, self.total_steps, self.epoch = step, max(1, total_steps), epoch

    input_dtype = torch.float32   # float64 for fp64 reference runs (build_model(..., dtype=torch.float64))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x.to(self.input_dtype))

    def compute_loss(self, view_a: torch.Tensor, view_b: torch.Tensor):
        return self(view_a, view_b)

    @torch.no_grad()
    def momentum_update(self) -> None:
        """EMA step of a momentum encoder; nothing for methods without one."""

    def _amcl_loss(self, dim: int):
        l = self.lcfg
        return AMCLContrastive(dim, self.heads, beta=l.beta, topk=l.topk, tau_min=l.tau_min, tau_max=l.tau_max,
                               hidden=l.tau_hidden, validate=False)

    def _stats(self, loss_module) -> dict:
        return dict(loss_module.last_stats) if self.amcl else {}

    def _encode(self, x: torch.Tensor, backbone: nn.Module, projector: nn.Module) -> torch.Tensor:
        return projector(backbone(x))


def _ema_(target: nn.Module, online: nn.Module, m: float) -> None:
    t = [p for p in target.parameters()]
    o = [p.detach() for p in online.parameters()]
    torch._foreach_mul_(t, m)
    torch._foreach_add_(t, o, alpha=1.0 - m)


def _frozen_copy(module: nn.Module) -> nn.Module:
    twin = copy.deepcopy(module)
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


class SimCLR(SSLModel):
    """Negatives are the other views of the global batch; AMCL: per-pair temperature, top-k negatives."""

    method = "simclr"

    def __init__(self, cfg, **kw):
        super().__init__(cfg, **kw)
        m = cfg.model
        self.projector = MultiHeadProjector(self.feature_dim, m.proj_hidden, m.proj_dim, self.heads, "mlp")
        self.criterion = self._amcl_loss(m.proj_dim) if self.amcl else None
        self.temperature = cfg.loss.temperature

    def forward(self, view_a, view_b):
        B = view_a.shape[0]
        z = self._encode(torch.cat([view_a, view_b]), self.backbone, self.projector)   # (C, 2B, D)
        za = dist.gather_with_grad(z[:, :B], dim=1)
        zb = dist.gather_with_grad(z[:, B:], dim=1)
        if self.amcl:
            return self.criterion(za, zb), self._stats(self.criterion)
        return nt_xent(za, zb, self.temperature, validate=False), {}


class MoCo(SSLModel):
    """Query encoder + momentum key encoder + one queue of keys per head (MoCo v2, symmetrised).

    Options on this path: MoCHi (synthetic hard negatives from each query's hardest queue members, after
    `loss.mochi_start` epochs; never enqueued) and ASCL (soft targets over the queue; one direction, query
    from view a, key from view b, which may be weakly augmented via data.augs_b).
    """

    method = "moco"

    def __init__(self, cfg, **kw):
        super().__init__(cfg, **kw)
        m, l = cfg.model, cfg.loss
        self.projector = MultiHeadProjector(self.feature_dim, m.proj_hidden, m.proj_dim, self.heads, "mlp")
        self.key_backbone = _frozen_copy(self.backbone)
        self.key_projector = _frozen_copy(self.projector)
        self.criterion = self._amcl_loss(m.proj_dim) if self.amcl else None
        self.temperature, self.momentum = l.temperature, l.momentum
        self.ascl = bool(l.ascl)
        self.mochi = (l.mochi_n_hard, l.mochi_s1, l.mochi_s2) if l.mochi_n_hard > 0 else None
        self.mochi_start = l.mochi_start
        g = torch.Generator().manual_seed(cfg.training.seed + 7919)  # same queue on every rank
        queue = F.normalize(torch.randn(self.heads, l.queue_size, m.proj_dim, generator=g), dim=-1)
        self.register_buffer("queue", queue)
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def momentum_update(self) -> None:
        _ema_(self.key_backbone, self.backbone, self.momentum)
        _ema_(self.key_projector, self.projector, self.momentum)

    @torch.no_grad()
    def _keys(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self._encode(x, self.key_backbone, self.key_projector).float(), dim=-1)

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor) -> None:
        """keys (C, n, D) of this rank; the queue takes the keys of all ranks, rank order."""
        keys = dist.gather_no_grad(keys, dim=1)
        K, n = self.queue.shape[1], keys.shape[1]
        idx = (self.queue_ptr + torch.arange(n, device=keys.device)) % K
        self.queue.index_copy_(1, idx, keys.to(self.queue.dtype))
        self.queue_ptr.copy_((self.queue_ptr + n) % K)

    def _mix(self, q: torch.Tensor, queue: torch.Tensor):
        """MoCHi negatives for queries q (C, N, D), or None before the warm-up ends."""
        if self.mochi is None or self.epoch < self.mochi_start:
            return None
        # Seeded by (seed, step, rank): reproducible, and a resumed run draws what the uninterrupted one drew.
        g = torch.Generator(device=q.device).manual_seed(
            (self.seed * 1_000_003 + self.step) * 131 + dist.rank())
        n_hard, s1, s2 = self.mochi
        return mix_hard_negatives(q.detach(), queue, n_hard, s1, s2, generator=g, validate=False)

    def forward(self, view_a, view_b):
        B = view_a.shape[0]
        queue = self.queue.clone()          # enqueued below; autograd needs the version it saw
        if self.ascl:
            q = self._encode(view_a, self.backbone, self.projector)
            kb = self._keys(view_b)
            l = self.lcfg
            loss = ascl_loss(q, kb, queue, K=l.ascl_k, t1=l.ascl_t1, t2=l.ascl_t2, variant=l.ascl_variant,
                             validate=False)
            self._enqueue(kb)
            return loss, {}
        q = self._encode(torch.cat([view_a, view_b]), self.backbone, self.projector)   # (C, 2B, D)
        k = self._keys(torch.cat([view_a, view_b]))
        qa, qb, ka, kb = q[:, :B], q[:, B:], k[:, :B], k[:, B:]
        if self.amcl:
            loss = self.criterion(qa, qb, queue, keys=(ka, kb), extra_negatives=self._mix(q, queue))
            stats = self._stats(self.criterion)
        else:
            mix = self._mix(q, queue)
            ea, eb = (None, None) if mix is None else (mix[:, :B], mix[:, B:])
            t = self.temperature
            loss = 0.5 * (info_nce_queue(qa, kb, queue, t, extra_negatives=ea, validate=False)
                          + info_nce_queue(qb, ka, queue, t, extra_negatives=eb, validate=False))
            stats = {}
        self._enqueue(k)
        return loss, stats


class SimSiam(SSLModel):
    """Projector + predictor, stop-gradient on the projections; AMCL: per-pair temperature on cos(p, sg z)."""

    method = "simsiam"

    def __init__(self, cfg, **kw):
        super().__init__(cfg, **kw)
        m, l = cfg.model, cfg.loss
        self.projector = MultiHeadProjector(self.feature_dim, m.proj_hidden, m.proj_dim, self.heads, "bn_mlp")
        self.predictor = MultiHeadPredictor(m.proj_dim, m.pred_hidden, self.heads)
        self.criterion = (AMCLSimSiam(m.proj_dim, self.heads, beta=l.beta, tau_min=l.tau_min, tau_max=l.tau_max,
                                      hidden=l.tau_hidden, validate=False) if self.amcl else None)

    def forward(self, view_a, view_b):
        B = view_a.shape[0]
        z = self._encode(torch.cat([view_a, view_b]), self.backbone, self.projector)
        p = self.predictor(z)
        pa, pb, za, zb = p[:, :B], p[:, B:], z[:, :B], z[:, B:]
        if self.amcl:
            return self.criterion(pa, pb, za, zb), self._stats(self.criterion)
        return negative_cosine(pa, pb, za, zb, validate=False), {}


class BYOL(SSLModel):
    """Online backbone/projector/predictor regress a momentum target (momentum loss.momentum -> 1, cosine).

    AMCL on BYOL is AMCL's SimSiam form (Eq. 2.2) with the target projections in place of sg(z): BYOL's
    loss is SimSiam's with a momentum target, so that is where the adaptive temperature is defined.
    """

    method = "byol"

    def __init__(self, cfg, **kw):
        super().__init__(cfg, **kw)
        m, l = cfg.model, cfg.loss
        self.projector = MultiHeadProjector(self.feature_dim, m.proj_hidden, m.proj_dim, self.heads, "bn_mlp")
        self.predictor = MultiHeadPredictor(m.proj_dim, m.pred_hidden, self.heads)
        self.target_backbone = _frozen_copy(self.backbone)
        self.target_projector = _frozen_copy(self.projector)
        self.base_momentum = l.momentum
        self.criterion = (AMCLSimSiam(m.proj_dim, self.heads, beta=l.beta, tau_min=l.tau_min, tau_max=l.tau_max,
                                      hidden=l.tau_hidden, validate=False) if self.amcl else None)

    def current_momentum(self) -> float:
        """BYOL's schedule: 1 - (1 - m0) (cos(pi k / K) + 1) / 2."""
        return 1 - (1 - self.base_momentum) * (math.cos(math.pi * self.step / self.total_steps) + 1) / 2

    @torch.no_grad()
    def momentum_update(self) -> None:
        m = self.current_momentum()
        _ema_(self.target_backbone, self.backbone, m)
        _ema_(self.target_projector, self.projector, m)

    def forward(self, view_a, view_b):
        B = view_a.shape[0]
        x = torch.cat([view_a, view_b])
        p = self.predictor(self._encode(x, self.backbone, self.projector))
        with torch.no_grad():
            t = self._encode(x, self.target_backbone, self.target_projector)
        pa, pb, ta, tb = p[:, :B], p[:, B:], t[:, :B], t[:, B:]
        if self.amcl:
            return self.criterion(pa, pb, ta, tb), self._stats(self.criterion)
        return byol_loss(pa, pb, ta, tb, validate=False), {}


class BarlowTwins(SSLModel):
    """Cross-correlation of the two views' standardised projections over the global batch."""

    method = "barlow_twins"

    def __init__(self, cfg, **kw):
        super().__init__(cfg, **kw)
        m, l = cfg.model, cfg.loss
        self.projector = MultiHeadProjector(self.feature_dim, m.proj_hidden, m.proj_dim, self.heads, "bn_mlp")
        self.lambd = l.barlow_lambda
        self.criterion = (AMCLBarlowTwins(m.proj_dim, self.heads, batch_size=self.global_batch, beta=l.beta,
                                          lambd=l.barlow_lambda, tau_min=l.tau_min, tau_max=l.tau_max,
                                          hidden=l.tau_hidden, validate=False) if self.amcl else None)

    def forward(self, view_a, view_b):
        B = view_a.shape[0]
        z = self._encode(torch.cat([view_a, view_b]), self.backbone, self.projector)
        za = dist.gather_with_grad(z[:, :B], dim=1)
        zb = dist.gather_with_grad(z[:, B:], dim=1)
        if self.amcl:
            return self.criterion(za, zb), self._stats(self.criterion)
        return barlow_twins(za, zb, self.lambd, validate=False), {}


METHODS = {cls.method: cls for cls in (SimCLR, MoCo, SimSiam, BYOL, BarlowTwins)}


def build_model(cfg, *, image_size: int | None = None, global_batch: int | None = None,
                device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> SSLModel:
    """The SSL model a config describes, on `device`, channels_last. Used by train.py, eval.py and the profiler.

    image_size defaults to cfg.data.image_size (it picks the stem when model.stem=auto); global_batch to
    cfg.training.batch_size x world size (Barlow Twins-AMCL's temperature net is sized by it).
    dtype: float64 for reference runs (training.precision=fp64); inputs are cast by `train_step`/`features`.
    """
    if cfg.model.method not in METHODS:
        raise UserError(f"unknown model.method '{cfg.model.method}': use one of {', '.join(METHODS)}")
    image_size = image_size or cfg.data.image_size
    global_batch = global_batch or cfg.training.batch_size * dist.world_size()
    model = METHODS[cfg.model.method](cfg, image_size=image_size, global_batch=global_batch)
    if dtype is None and getattr(cfg.training, "precision", "") == "fp64":
        dtype = torch.float64
    if dtype is not None:
        model = model.to(dtype)
        model.input_dtype = dtype
    return model.to(device).to(memory_format=torch.channels_last)
