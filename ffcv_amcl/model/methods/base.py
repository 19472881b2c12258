"""What every self-supervised method shares: a backbone, the progress counters, the public projection API,
and the method's own defaults and checks (each subclass lists them; config.py asks the class).

    out = model(view_a, view_b)               # forward = project the views, then the method's loss: a StepOutput
    z = model.project(x)                      # (C, N, D) online projections; model.project(x, target=True):
                                              # the momentum encoder's (MoCo keys, BYOL targets)
    model.momentum_update()                   # after optimizer.step(): EMA of MoCo keys / BYOL target

Everything in a StepOutput but the loss is detached (no host sync): `stats`, per-head `tau_pos`/`tau_neg` (C,)
when AMCL is on; `features`, the online views' backbone features (the online probe trains on them); `pairs`, the
loss's per-pair temperatures for the trainer's temperature health; `projections`, the views' projections (the
separation monitor's positive and negative pairs).
"""
from __future__ import annotations

import copy
import math
from typing import NamedTuple

import torch
from torch import nn

from ffcv_amcl import distributed as dist
from ffcv_amcl.errors import UserError, check
from ffcv_amcl.losses.amcl import AMCLLoss, build_amcl_loss, forms_of
from ffcv_amcl.model.backbone import feature_dim_of, make_backbone

# Settings whose config value means "the method's default" (config.py leaves them at these sentinels).
UNSET = {"loss.temperature": 0.0, "loss.beta": -1.0, "model.proj_dim": 0, "model.proj_hidden": 0,
         "model.pred_hidden": 0}


class StepOutput(NamedTuple):
    """One forward of a method, as the trainer reads it (by name: fields may be added)."""

    loss: torch.Tensor
    stats: dict                        # per-head means (C,) of AMCL's temperatures; {} without AMCL
    features: torch.Tensor | None      # backbone features (N, F) of the online views, detached
    pairs: dict                        # the AMCL loss's per-pair tensors (temperature health); {} without AMCL
    projections: torch.Tensor          # (C, 2B, D) projections of this process's views [a; b], detached


class SSLModel(nn.Module):
    """Base: a backbone and the bookkeeping every method shares."""

    method = "?"
    options: tuple[str, ...] = ()   # optional loss variants on this method's path: "mochi", "ascl"
    amcl_kind: str | None = "contrastive"   # the kind of AMCL loss the method uses (losses/amcl/factory.py);
                                            # None: the method has no AMCL form
    local_views = False             # whether forward takes the multi-crop views: model(a, b, local_views=...)
    refusals: dict[str, str] = {}   # why the method refuses "amcl" (amcl_kind None), "local_views" (local_views
                                    # False) or "amcl_local_views" (AMCL with multi-crop), one line each
    # The settings in UNSET this method fills: a value, or a function of cfg (sizes that follow the backbone).
    DEFAULTS: dict = {"loss.temperature": 0.5, "loss.beta": 1e-4, "model.proj_dim": 2048, "model.proj_hidden": 2048,
                      "model.pred_hidden": 512}

    def __init__(self, cfg, *, image_size: int, global_batch: int):
        super().__init__()
        m = cfg.model
        self.heads, self.amcl = m.heads, bool(m.amcl)
        self.backbone = make_backbone(m.arch, stem=m.stem, image_size=image_size, patch_size=m.patch_size)
        self.feature_dim = self.backbone.feature_dim
        self.global_batch = global_batch
        self.seed = cfg.training.seed
        self.criterion = None
        # Set by the trainer before each step (schedules inside the model: BYOL momentum, MoCHi warm-up).
        self.step, self.total_steps, self.epoch = 0, 1, 0

    input_dtype = torch.float32   # float64 for fp64 reference runs (build_model(..., dtype=torch.float64))

    # -- defaults and checks owned by the method ---------------------------------------------------------------

    @classmethod
    def defaults(cls, cfg) -> dict:
        """{setting: value} for the settings in UNSET this method fills: its DEFAULTS, functions of cfg applied."""
        return {key: value(cfg) if callable(value) else value for key, value in cls.DEFAULTS.items()}

    @classmethod
    def resolve(cls, cfg) -> None:
        """Replace the 'method default' sentinels in cfg with this method's values (in place)."""
        for key, value in cls.defaults(cfg).items():
            section, name = key.split(".")
            if getattr(getattr(cfg, section), name) == UNSET[key]:
                setattr(getattr(cfg, section), name, value)

    @classmethod
    def check_config(cls, cfg, world_size: int) -> None:
        """Method-specific checks before any work (UserError, one line)."""
        l = cfg.loss
        mochi, ascl = l.mochi_n_hard > 0, bool(l.ascl)
        check(not (mochi and "mochi" not in cls.options) and not (ascl and "ascl" not in cls.options),
              f"MoCHi/ASCL work on the MoCo path: set --model.method=moco (got {cls.method})")
        if cfg.data.local_crops and not cls.local_views:     # the message is built only for a refusal
            raise UserError(cls.refusals.get("local_views") or
                            f"{cls.method}'s loss compares two views of equal size, not local crops: set "
                            f"--data.local_crops=0 (multi-crop: {', '.join(local_view_methods())})")
        check(not (cfg.data.local_crops and cfg.model.amcl) or "amcl_local_views" not in cls.refusals,
              cls.refusals.get("amcl_local_views", ""))
        if cls.amcl_kind is None:
            check(not cfg.model.amcl, cls.refusals["amcl"])
            return
        forms = forms_of(cls.amcl_kind)
        check(not cfg.model.amcl or l.amcl_form in forms,
              f"loss.amcl_form={l.amcl_form} needs negatives, which {cls.method} has none of: use one of "
              f"{', '.join(forms)}")

    # -- the public projection API ----------------------------------------------------------------------------

    def set_progress(self, *, step: int, total_steps: int, epoch: int) -> None:
        self.step, self.total_steps, self.epoch = step, max(1, total_steps), epoch

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x.to(self.input_dtype))

    def encoders(self, target: bool) -> tuple[nn.Module, nn.Module]:
        """(backbone, projector) of the online encoder, or of the momentum encoder when target=True."""
        return self.backbone, self.projector

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(backbone features (N, F), projections (C, N, D)) of the online encoder."""
        backbone, projector = self.encoders(False)
        h = backbone(x)
        return h, projector(h)

    def embed_global(self, view_a: torch.Tensor, view_b: torch.Tensor):
        """(features (2B, F), projections (C, 2B, D) of this rank's views [a; b], then view a's and view b's
        projections of the global batch (C, world * B, D), gathered with gradients): for losses over the global
        batch (SimCLR's negatives, Barlow Twins' and VICReg's batch statistics)."""
        B = view_a.shape[0]
        h, z = self.embed(torch.cat([view_a, view_b]))
        return h, z, dist.gather_with_grad(z[:, :B], dim=1), dist.gather_with_grad(z[:, B:], dim=1)

    def project(self, x: torch.Tensor, *, target: bool = False) -> torch.Tensor:
        """(C, N, D) projections of a batch of N images by every head (online or momentum encoder)."""
        backbone, projector = self.encoders(target)
        return projector(backbone(x))

    def output(self, loss: torch.Tensor, features: torch.Tensor, projections: torch.Tensor) -> StepOutput:
        """The StepOutput of a forward whose loss is `loss` (the AMCL loss's records when AMCL is on);
        `projections` (C, 2B, D): the online projections of views a then views b."""
        stats, pairs = {}, {}
        if self.amcl:
            stats, pairs = dict(self.criterion.last_stats), dict(self.criterion.last_pairs)
        return StepOutput(loss, stats, features.detach(), pairs, projections.detach())

    @torch.no_grad()
    def momentum_update(self) -> None:
        """EMA step of a momentum encoder; nothing for methods without one."""

    def amcl_criterion(self, cfg) -> AMCLLoss | None:
        """The method's AMCL loss (its `amcl_kind`) as the config describes it; None when AMCL is off."""
        return build_amcl_loss(cfg, self.amcl_kind, batch_size=self.global_batch) if self.amcl else None


def ema_(target: nn.Module, online: nn.Module, m: float) -> None:
    """target <- m * target + (1 - m) * online, parameter by parameter."""
    t = [p for p in target.parameters()]
    o = [p.detach() for p in online.parameters()]
    torch._foreach_mul_(t, m)
    torch._foreach_add_(t, o, alpha=1.0 - m)


def cosine_momentum(base: float, step: int, total_steps: int) -> float:
    """BYOL's and DINO's EMA schedule, base -> 1 on a cosine: 1 - (1 - base) (cos(pi k / K) + 1) / 2."""
    return 1 - (1 - base) * (math.cos(math.pi * step / total_steps) + 1) / 2


def frozen_copy(module: nn.Module) -> nn.Module:
    twin = copy.deepcopy(module)
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


def feature_dim(cfg) -> int:
    return feature_dim_of(cfg.model.arch, cfg.model.patch_size)


def local_view_methods() -> list[str]:
    """The methods whose forward takes multi-crop local views (every subclass of SSLModel, asked)."""
    found, todo = set(), list(SSLModel.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls.local_views:
            found.add(cls.method)
    return sorted(found)
