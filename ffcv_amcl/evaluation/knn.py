"""Weighted kNN classifier on L2-normalised features (InstDisc / MoCo monitor protocol).

Each test feature takes its k most cosine-similar training features; neighbour j votes for its class
with weight exp(s_j / t). k = 200, t = 0.1 by default.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_predict(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor, *,
                k: int = 200, t: float = 0.1, num_classes: int | None = None, chunk: int = 1024) -> torch.Tensor:
    """Predicted class of every test feature (int64, (N_test,))."""
    train = F.normalize(train_feats.float(), dim=1)
    test = F.normalize(test_feats.float(), dim=1)
    num_classes = num_classes or int(train_labels.max()) + 1
    k = min(k, train.shape[0])
    preds = []
    for start in range(0, test.shape[0], chunk):
        sim = test[start:start + chunk] @ train.T                          # (n, N_train) cosine
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = (top_sim / t).exp()
        votes = torch.zeros(sim.shape[0], num_classes, device=sim.device)
        votes.scatter_add_(1, train_labels[top_idx], weights)
        preds.append(votes.argmax(1))
    return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)


def knn_top1(train_feats, train_labels, test_feats, test_labels, **kw) -> float:
    """Top-1 accuracy of knn_predict, in percent."""
    pred = knn_predict(train_feats, train_labels, test_feats, **kw)
    return 100.0 * (pred == test_labels.to(pred.device)).float().mean().item()
