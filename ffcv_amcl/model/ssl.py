"""Build the SSL model a config describes. The methods themselves live in ffcv_amcl/model/methods/, one module
each; every one answers the same calls (see methods/base.py):

    out = model(view_a, view_b)              # a StepOutput: loss, stats, features, pairs, projections
    out = model(view_a, view_b, local_views=v)   # multi-crop (SimCLR, MoCo, SimSiam, BYOL, DINO): v (N B, 3, s, s)
    model.momentum_update()                  # after optimizer.step(): EMA of MoCo keys / BYOL target / DINO teacher

`forward` is the loss so that DistributedDataParallel sees the whole computation. `model.features(x)` is the
backbone feature the kNN monitor and the linear probes use. Across processes (torchrun): SimCLR and Barlow Twins
gather the projections of every rank with gradients (the loss is that of the global batch on every rank), so do
VICReg (its variances and covariances) and SimCLR's multi-crop loss; MoCo gathers keys before they enter the
queues, DINO all-reduces its centre, and SimSiam/BYOL are per-sample losses that DDP's gradient average already
makes global. The two global views go through the backbone as one concatenated batch, the local views as another.
"""
from __future__ import annotations

import torch

from ffcv_amcl import distributed as dist
from ffcv_amcl.errors import UserError
from ffcv_amcl.model.methods import METHODS, SSLModel

__all__ = ["METHODS", "SSLModel", "build_model"]


def build_model(cfg, *, image_size: int | None = None, global_batch: int | None = None,
                device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> SSLModel:
    """The SSL model a config describes, on `device`, channels_last where the backbone is convolutional. Used by
    train.py, eval.py and the profiler.

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
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if model.backbone.channels_last else model
