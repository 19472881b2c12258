"""What a trained model's AMCL loss makes of pairs of views, for the plots: per head, the temperatures its
temperature network gives the pairs the loss compares, with masks of the positive and negative pairs.

    pairs = temperature_pairs(model, view_a, view_b)   # None without AMCL
    pairs.tau (C, M, M'), pairs.pos / pairs.neg (M, M') boolean, pairs.kind: "views", "predictor" or "channels"
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F


def view_pair_masks(n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Over the 2n x 2n pairs of [views a; views b]: positives (i, i+n) and negatives (different images),
    each unordered pair once."""
    idx = torch.arange(2 * n, device=device)
    upper = idx[:, None] < idx[None, :]
    same_image = (idx[:, None] % n) == (idx[None, :] % n)
    return upper & same_image, upper & ~same_image


def diagonal_masks(m: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Positives on the diagonal of an m x m pair grid, every other cell negative."""
    eye = torch.eye(m, dtype=torch.bool, device=device)
    return eye, ~eye


def view_pairs(model, view_a: torch.Tensor, view_b: torch.Tensor) -> SimpleNamespace:
    """Contrastive methods: the 2n views [a; b], each unordered pair once, positives (i, i + n), negatives
    different images."""
    z = model.project(torch.cat([view_a, view_b])).float()
    pos, neg = view_pair_masks(view_a.shape[0], z.device)
    return SimpleNamespace(tau=model.criterion.pair_temperatures(z, z), pos=pos, neg=neg, kind="views")


def prediction_pairs(model, view_a: torch.Tensor, view_b: torch.Tensor) -> SimpleNamespace:
    """SimSiam, BYOL: tau(prediction of one view, target of the other view) for every pair; positives: the
    pairs in the loss."""
    n = view_a.shape[0]
    x = torch.cat([view_a, view_b])
    z = model.project(x)
    p = F.normalize(model.predictor(z).float(), dim=-1)
    partner = F.normalize(model.targets(x, z).float().roll(n, 1), dim=-1)   # p of view a pairs with view b
    pos, neg = diagonal_masks(2 * n, x.device)
    return SimpleNamespace(tau=model.criterion.pair_temperatures(p, partner), pos=pos, neg=neg, kind="predictor")


def channel_pairs(model, view_a: torch.Tensor, view_b: torch.Tensor) -> SimpleNamespace | None:
    """Barlow Twins: channel-vector pairs (l, m), the same channel on the diagonal; phi_b takes exactly the
    training batch (None for another batch size)."""
    n = view_a.shape[0]
    if n != model.criterion.batch_size:
        return None
    z = model.project(torch.cat([view_a, view_b])).float()
    tau = model.criterion.pair_temperatures(z[:, :n], z[:, n:])
    pos, neg = diagonal_masks(tau.shape[-1], z.device)
    return SimpleNamespace(tau=tau, pos=pos, neg=neg, kind="channels")


PAIRS = {"contrastive": view_pairs, "siamese": prediction_pairs, "barlow": channel_pairs}   # by AMCL loss kind


@torch.no_grad()
def temperature_pairs(model, view_a: torch.Tensor, view_b: torch.Tensor) -> SimpleNamespace | None:
    """Per head, the temperatures the model's AMCL loss gives the pairs it compares: a namespace of tau
    (C, M, M'), boolean masks pos and neg (M, M') and kind; None without AMCL (or, for Barlow Twins, when the
    batch is not the training batch size)."""
    if not model.amcl:
        return None
    return PAIRS[model.amcl_kind](model, view_a, view_b)
