"""C projection heads (and predictors) as stacked weights: one einsum runs all heads, no loop over heads.

Each head's weights are a slice of a (C, in, out) tensor, initialised per head exactly like nn.Linear
(U(-1/sqrt(in), 1/sqrt(in)) for weight and bias, i.e. kaiming-uniform with a=sqrt(5)), so one head is
distributed like the usual single projector. BatchNorm of all heads is one nn.BatchNorm1d over C*H channels
(per head and feature, over the batch), so torch's SyncBatchNorm conversion applies unchanged.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ffcv_amcl.errors import UserError

KINDS = ("mlp", "bn_mlp")


class StackedLinear(nn.Module):
    """C independent Linear(in_dim, out_dim) layers; (N, in) or (C, N, in) -> (C, N, out)."""

    def __init__(self, heads: int, in_dim: int, out_dim: int, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(heads, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(heads, out_dim)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.weight.shape[1])
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            y = torch.einsum("nf,cfh->cnh", x, self.weight)   # shared input (the backbone feature)
        else:
            y = torch.einsum("cnf,cfh->cnh", x, self.weight)  # per-head input
        # under autocast y is low precision: add the bias in y's dtype, as nn.Linear (addmm) does
        return y if self.bias is None else y + self.bias.unsqueeze(1).to(y.dtype)


class StackedBatchNorm(nn.Module):
    """BatchNorm over the batch for each (head, feature) of a (C, N, H) stack, with running statistics."""

    def __init__(self, heads: int, features: int, affine: bool = True):
        super().__init__()
        self.heads, self.features = heads, features
        self.bn = nn.BatchNorm1d(heads * features, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        C, N, H = x.shape
        y = self.bn(x.transpose(0, 1).reshape(N, C * H))
        return y.view(N, C, H).transpose(0, 1)


def _check_int(owner: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{owner}: {name}={value!r} must be an integer >= 1")
    return value


class MultiHeadProjector(nn.Module):
    """C projection heads on one backbone feature: (N, F) -> (C, N, D).

    kind "mlp": Linear-ReLU-Linear (SimCLR/MoCo heads, F -> F -> D in the reference).
    kind "bn_mlp": Linear-BN-ReLU-Linear-BN (SimSiam/Barlow Twins projector; linears without bias since a BN
    follows, the last BN without affine parameters as in SimSiam).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, heads: int, kind: str = "mlp"):
        super().__init__()
        owner = "MultiHeadProjector"
        if kind not in KINDS:
            raise UserError(f"{owner}: unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
        self.in_dim = _check_int(owner, "in_dim", in_dim)
        self.hidden_dim = _check_int(owner, "hidden_dim", hidden_dim)
        self.out_dim = _check_int(owner, "out_dim", out_dim)
        self.heads = _check_int(owner, "heads", heads)
        self.kind = kind
        bn = kind == "bn_mlp"
        self.fc1 = StackedLinear(heads, in_dim, hidden_dim, bias=not bn)
        self.bn1 = StackedBatchNorm(heads, hidden_dim) if bn else None
        self.fc2 = StackedLinear(heads, hidden_dim, out_dim, bias=not bn)
        self.bn2 = StackedBatchNorm(heads, out_dim, affine=False) if bn else None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.dim() != 2 or h.shape[1] != self.in_dim:
            raise UserError(f"MultiHeadProjector: input has shape {tuple(h.shape)} but must be (N, {self.in_dim}); "
                            f"build the projector with in_dim={h.shape[-1]} or flatten the backbone output")
        x = self.fc1(h)
        if self.bn1 is not None:
            x = self.bn1(x)
        x = self.fc2(torch.relu(x))
        if self.bn2 is not None:
            x = self.bn2(x)
        return x


class MultiHeadPredictor(nn.Module):
    """Per-head predictor for SimSiam/BYOL: Linear-BN-ReLU-Linear on each head's projection, (C, N, D) -> (C, N, D)."""

    def __init__(self, dim: int, hidden_dim: int, heads: int):
        super().__init__()
        owner = "MultiHeadPredictor"
        self.dim = _check_int(owner, "dim", dim)
        self.hidden_dim = _check_int(owner, "hidden_dim", hidden_dim)
        self.heads = _check_int(owner, "heads", heads)
        self.fc1 = StackedLinear(heads, dim, hidden_dim, bias=False)
        self.bn1 = StackedBatchNorm(heads, hidden_dim)
        self.fc2 = StackedLinear(heads, hidden_dim, dim, bias=True)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 3 or z.shape[0] != self.heads or z.shape[2] != self.dim:
            raise UserError(f"MultiHeadPredictor: input has shape {tuple(z.shape)} but must be "
                            f"(heads={self.heads}, N, dim={self.dim}); pass the projector's output")
        return self.fc2(torch.relu(self.bn1(self.fc1(z))))


class MultiHeadExpander(nn.Module):
    """VICReg's expander per head: (Linear-BN-ReLU) x (layers - 1), then a Linear without bias; (N, F) -> (C, N, D).
    The hidden linears have no bias (a BN follows)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, heads: int, layers: int = 3):
        super().__init__()
        owner = "MultiHeadExpander"
        self.in_dim = _check_int(owner, "in_dim", in_dim)
        self.heads = _check_int(owner, "heads", heads)
        sizes = [in_dim] + [_check_int(owner, "hidden_dim", hidden_dim)] * (_check_int(owner, "layers", layers) - 1)
        self.hidden = nn.ModuleList(StackedLinear(heads, a, b, bias=False) for a, b in zip(sizes, sizes[1:]))
        self.norms = nn.ModuleList(StackedBatchNorm(heads, b) for b in sizes[1:])
        self.last = StackedLinear(heads, sizes[-1], _check_int(owner, "out_dim", out_dim), bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.dim() != 2 or h.shape[1] != self.in_dim:
            raise UserError(f"MultiHeadExpander: input has shape {tuple(h.shape)} but must be (N, {self.in_dim}); "
                            f"build the expander with in_dim={h.shape[-1]}")
        x = h
        for linear, norm in zip(self.hidden, self.norms):
            x = torch.relu(norm(linear(x)))
        return self.last(x)


class DINOHead(nn.Module):
    """DINO's head (Caron et al. 2021): 3-layer MLP with GELU to a bottleneck, L2 normalisation, then a
    weight-normalised linear layer without bias whose norms are fixed at 1 (the paper's norm_last_layer):
    (N, F) -> (1, N, out_dim). `last` is that layer's direction parameter (frozen for DINO's first epoch)."""

    def __init__(self, in_dim: int, hidden_dim: int, bottleneck_dim: int, out_dim: int):
        super().__init__()
        owner = "DINOHead"
        dims = [_check_int(owner, n, v) for n, v in (("in_dim", in_dim), ("hidden_dim", hidden_dim),
                                                     ("bottleneck_dim", bottleneck_dim), ("out_dim", out_dim))]
        self.in_dim = in_dim
        self.mlp = nn.Sequential(nn.Linear(dims[0], dims[1]), nn.GELU(), nn.Linear(dims[1], dims[1]), nn.GELU(),
                                 nn.Linear(dims[1], dims[2]))
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
        self.last = nn.Parameter(torch.empty(out_dim, bottleneck_dim))
        nn.init.kaiming_uniform_(self.last, a=math.sqrt(5))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.dim() != 2 or h.shape[1] != self.in_dim:
            raise UserError(f"DINOHead: input has shape {tuple(h.shape)} but must be (N, {self.in_dim}); "
                            f"build the head with in_dim={h.shape[-1]}")
        x = nn.functional.normalize(self.mlp(h), dim=-1)
        return (x @ nn.functional.normalize(self.last, dim=-1).to(x.dtype).t()).unsqueeze(0)
