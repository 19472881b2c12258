"""The inner products of every pair of vectors of each head, (C, M, D) x (C, K, D) -> (C, M, K).

One batched gemm, except on the CPU when the heads do not divide among torch's threads: a CPU batched gemm hands
each thread whole heads, so 3 heads on 2 threads leave one thread idle for a third of the product (it ran about
1.3x the time of three 2-D products). There each head's product is one 2-D gemm, threaded inside, written into
one output, and so are the two gemms of its backward. Nothing is copied: a head's queue of negatives is read
where it lies.
"""
from __future__ import annotations

import torch


def per_head_gemms(x: torch.Tensor, y: torch.Tensor) -> bool:
    """Whether pair_products(x, y) runs one 2-D gemm per head: on the CPU, for real floating-point inputs of one
    dtype outside autocast and outside torch.compile's tracing (which sees one bmm), when the heads do not divide
    among torch's threads."""
    if torch.compiler.is_compiling() or x.device.type != "cpu" or x.shape[0] < 2:
        return False
    if x.dtype != y.dtype or not x.is_floating_point() or torch.is_autocast_enabled("cpu"):
        return False
    return x.shape[0] % torch.get_num_threads() != 0


def pair_products(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """bmm(x, y^T): x (C, M, D), y (C, K, D) -> (C, M, K), contiguous, a tensor of its own (not a view), so the
    caller may write into a detached alias of it."""
    if per_head_gemms(x, y):
        return _PerHead.apply(x, y)
    return torch.bmm(x, y.transpose(1, 2))


class _PerHead(torch.autograd.Function):
    """bmm(x, y^T) as one torch.mm per head, forward and backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, y)
        out = x.new_empty(x.shape[0], x.shape[1], y.shape[1])
        for c in range(x.shape[0]):
            torch.mm(x[c], y[c].T, out=out[c])
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, y = ctx.saved_tensors
        gx = gy = None
        if ctx.needs_input_grad[0]:
            gx = torch.empty_like(x, memory_format=torch.contiguous_format)
            for c in range(x.shape[0]):
                torch.mm(grad[c], y[c], out=gx[c])
        if ctx.needs_input_grad[1]:
            gy = torch.empty_like(y, memory_format=torch.contiguous_format)
            for c in range(y.shape[0]):
                torch.mm(grad[c].T, x[c], out=gy[c])
        return gx, gy
