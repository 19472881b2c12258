"""ResNet backbones from torchvision, headless, with the small-image stem that CIFAR-sized inputs need.

On 32x32 images the ImageNet stem (7x7 stride-2 conv + max-pool) throws away 15/16 of the pixels before
the first residual block; the CIFAR stem (3x3 conv, stride 1, no max-pool) keeps the full resolution.
`stem="auto"` picks the CIFAR stem for images of at most 64 px, as in the SimCLR/MoCo CIFAR recipes.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision import models

from ffcv_amcl.errors import UserError

ARCHS = ("resnet18", "resnet50")
STEMS = ("cifar", "imagenet", "auto")
FEATURE_DIMS = {"resnet18": 512, "resnet50": 2048}


def resolve_stem(stem: str, image_size: int) -> str:
    """`auto` -> cifar for images <= 64 px, imagenet otherwise."""
    if stem not in STEMS:
        raise UserError(f"unknown model.stem '{stem}': use one of {', '.join(STEMS)}")
    if stem == "auto":
        return "cifar" if image_size <= 64 else "imagenet"
    return stem


def make_backbone(arch: str, *, stem: str = "auto", image_size: int = 224) -> nn.Module:
    """torchvision ResNet with fc = Identity: (N, 3, H, W) -> (N, F). Attribute `feature_dim` = F."""
    if arch not in ARCHS:
        raise UserError(f"unknown model.arch '{arch}': use one of {', '.join(ARCHS)}")
    net = getattr(models, arch)(weights=None)
    if resolve_stem(stem, image_size) == "cifar":
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    net.feature_dim = FEATURE_DIMS[arch]
    return net
