"""Linear probe: a linear classifier on frozen, precomputed backbone features.

Features are computed once (no augmentation) and standardised with the training split's statistics
(a parameter-free BatchNorm, as in MAE's linear probe), then a single Linear layer is trained with SGD
(momentum 0.9), lr cosine-annealed per step: 100 epochs on features take seconds, not a backbone pass each.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def linear_probe(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                 test_labels: torch.Tensor, *, num_classes: int | None = None, epochs: int = 100,
                 lr: float = 0.1, batch_size: int = 256, weight_decay: float = 0.0, seed: int = 0) -> dict:
    """Train on (train_feats, train_labels); returns {'train_top1', 'test_top1'} in percent."""
    device = train_feats.device
    num_classes = num_classes or int(max(train_labels.max(), test_labels.max())) + 1
    mean, std = train_feats.mean(0), train_feats.std(0).clamp(min=1e-6)
    xtr, xte = (train_feats - mean) / std, (test_feats - mean) / std
    g = torch.Generator().manual_seed(seed)
    layer = torch.nn.Linear(xtr.shape[1], num_classes).to(device)
    with torch.no_grad():  # seeded init independent of the global RNG
        bound = 1 / math.sqrt(xtr.shape[1])
        layer.weight.copy_(torch.empty_like(layer.weight, device="cpu").uniform_(-bound, bound, generator=g))
        layer.bias.zero_()
    opt = torch.optim.SGD(layer.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    n = xtr.shape[0]
    steps_per_epoch = max(1, math.ceil(n / batch_size))
    total = epochs * steps_per_epoch
    step = 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=g).to(device)
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            for group in opt.param_groups:
                group["lr"] = 0.5 * lr * (1 + math.cos(math.pi * step / total))
            loss = F.cross_entropy(layer(xtr[idx]), train_labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    with torch.no_grad():
        acc = lambda x, y: 100.0 * (layer(x).argmax(1) == y).float().mean().item()
        return {"train_top1": acc(xtr, train_labels), "test_top1": acc(xte, test_labels)}
