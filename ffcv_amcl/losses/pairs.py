"""The inner products of every pair of vectors of each head, (C, M, D) x (C, K, D) -> (C, M, K): one batched gemm.

On the CPU, a batched gemm gives each thread whole heads: C = 3 heads on 2 threads leave one thread idle for a
third of the product, and the batch runs about 1.3x the time of a loop of C 2-D products. Here the rows of each
head are cut into blocks so that the number of items divides among the threads, in the forward and in both
gemms of the backward; each entry of the product is the same dot product as in one gemm.
"""
from __future__ import annotations

import math

import torch


def row_blocks(heads: int, rows: int, device: torch.device) -> int:
    """Into how many row blocks each head's product is cut so that heads * blocks divides among torch's CPU
    threads (1: no cut: on CUDA, with one thread, for one head, whose gemm is threaded inside, under autocast,
    whose bmm picks its own dtype, or when the rows do not divide)."""
    cut = device.type == "cpu" and heads > 1 and not torch.is_autocast_enabled("cpu")
    threads = torch.get_num_threads() if cut else 1
    blocks = threads // math.gcd(heads, threads)
    return blocks if blocks > 1 and rows % blocks == 0 else 1


def pair_products(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """bmm(x, y^T): x (C, M, D), y (C, K, D) -> (C, M, K), a tensor of its own (not a view), so the caller may
    write into a detached alias of it."""
    blocks = row_blocks(x.shape[0], x.shape[1], x.device)
    if blocks == 1:
        return torch.bmm(x, y.transpose(1, 2))
    return _BlockedPairs.apply(x, y, blocks)


def _repeat(t: torch.Tensor, blocks: int) -> torch.Tensor:
    """(C, ...) -> (C * blocks, ...): each head's tensor once per row block of that head."""
    return t.unsqueeze(1).expand(t.shape[0], blocks, *t.shape[1:]).reshape(t.shape[0] * blocks, *t.shape[1:])


class _BlockedPairs(torch.autograd.Function):
    """bmm(x, y^T) over C * blocks items of M / blocks rows each."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor, blocks: int) -> torch.Tensor:
        C, M, D = x.shape
        K = y.shape[1]
        ctx.save_for_backward(x, y)
        ctx.blocks = blocks
        out = x.new_empty(C, M, K)
        torch.bmm(x.reshape(C * blocks, M // blocks, D), _repeat(y.transpose(1, 2), blocks),
                  out=out.view(C * blocks, M // blocks, K))
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, y = ctx.saved_tensors
        blocks = ctx.blocks
        C, M, D = x.shape
        K = y.shape[1]
        g = grad.contiguous().view(C * blocks, M // blocks, K)
        gx = gy = None
        if ctx.needs_input_grad[0]:
            gx = torch.bmm(g, _repeat(y, blocks)).view(C, M, D)
        if ctx.needs_input_grad[1]:
            xb = x.reshape(C * blocks, M // blocks, D)
            gy = torch.bmm(g.transpose(1, 2), xb).view(C, blocks, K, D).sum(1)
        return gx, gy, None
