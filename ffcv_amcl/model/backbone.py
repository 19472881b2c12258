"""Headless backbones: torchvision's ResNet family (with the small-image stem CIFAR-sized inputs need) and any
timm model (`timm:<name>`, e.g. timm:vit_small_patch16_224).

On 32x32 images the ImageNet stem (7x7 stride-2 conv + max-pool) throws away 15/16 of the pixels before
the first residual block; the CIFAR stem (3x3 conv, stride 1, no max-pool) keeps the full resolution.
`stem="auto"` picks the CIFAR stem for images of at most 64 px, as in the SimCLR/MoCo CIFAR recipes.
A timm model is built with num_classes=0 (pooled features) and, where its constructor takes them, the data's
image size, `patch_size` (ViTs at CIFAR size: patch 4) and dynamic_img_size (multi-crop views of another size).
Every backbone has `feature_dim` (read from the model) and `channels_last` (True where convolutions dominate).
"""
from __future__ import annotations

import functools
import inspect

import torch
from torch import nn
from torchvision import models

from ffcv_amcl.errors import UserError, check

TIMM = "timm:"
RESNETS = tuple(n for n in models.list_models(module=models) if n.startswith(("resnet", "resnext", "wide_resnet")))
STEMS = ("cifar", "imagenet", "auto")
ARCH_HELP = f"torchvision {', '.join(sorted(RESNETS))}, or timm:<name> (any timm model)"


def resolve_stem(stem: str, image_size: int) -> str:
    """`auto` -> cifar for images <= 64 px, imagenet otherwise."""
    if stem not in STEMS:
        raise UserError(f"unknown model.stem '{stem}': use one of {', '.join(STEMS)}")
    if stem == "auto":
        return "cifar" if image_size <= 64 else "imagenet"
    return stem


def timm_name(arch: str) -> str | None:
    """The timm model name of `timm:<name>`, None for a torchvision arch."""
    return arch[len(TIMM):] if arch.startswith(TIMM) else None


def check_arch(arch: str) -> None:
    """UserError unless `arch` is a torchvision ResNet-family name or a timm model timm knows."""
    name = timm_name(arch)
    if name is None:
        check(arch in RESNETS, f"model.arch={arch!r} is unknown: use {ARCH_HELP}")
        return
    try:
        import timm
    except ImportError:
        raise UserError(f"model.arch={arch} needs timm: pip install timm") from None
    check(timm.is_model(name), f"model.arch={arch}: timm has no model '{name}' (timm.list_models() lists them)")


def timm_kwargs(name: str, image_size: int, patch_size: int) -> dict:
    """create_model keywords beyond num_classes=0: image size, patch size and dynamic image size where the
    model's constructor takes them (ViTs); UserError for a patch size the model has no notion of."""
    import timm

    with torch.device("meta"):
        params = inspect.signature(type(timm.create_model(name, num_classes=0)).__init__).parameters
    check(not patch_size or "patch_size" in params,
          f"model.patch_size={patch_size}: timm's {name} has no patches; leave model.patch_size=0")
    wanted = {"img_size": image_size, "patch_size": patch_size or None, "dynamic_img_size": True}
    return {k: v for k, v in wanted.items() if v is not None and k in params}


def _torchvision(arch: str, stem: str, image_size: int) -> nn.Module:
    net = getattr(models, arch)(weights=None)
    if resolve_stem(stem, image_size) == "cifar":
        width = net.conv1.out_channels
        net.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        net.maxpool = nn.Identity()
    net.feature_dim = net.fc.in_features
    net.fc = nn.Identity()
    net.channels_last = True
    return net


def _timm(name: str, stem: str, image_size: int, patch_size: int) -> nn.Module:
    import timm

    check(stem == "auto", f"model.stem={stem} reshapes torchvision ResNets; timm:{name} keeps its own stem: set "
                          f"--model.stem=auto")
    net = timm.create_model(name, num_classes=0, **timm_kwargs(name, image_size, patch_size))
    net.feature_dim = getattr(net, "head_hidden_size", net.num_features)
    net.channels_last = not hasattr(net, "patch_embed")     # ViT-like: one patch conv, then attention
    return net


def make_backbone(arch: str, *, stem: str = "auto", image_size: int = 224, patch_size: int = 0) -> nn.Module:
    """Headless backbone: (N, 3, H, W) -> (N, F), with attributes `feature_dim` = F and `channels_last`."""
    check_arch(arch)
    name = timm_name(arch)
    if name is None:
        check(not patch_size, f"model.patch_size={patch_size} applies to timm ViTs, not {arch}: leave it at 0")
        return _torchvision(arch, stem, image_size)
    return _timm(name, stem, image_size, patch_size)


@functools.lru_cache(maxsize=None)
def feature_dim_of(arch: str, patch_size: int = 0) -> int:
    """F of `arch` without building its weights (on the meta device): for the methods' size defaults."""
    with torch.device("meta"):
        return make_backbone(arch, image_size=224, patch_size=patch_size).feature_dim
