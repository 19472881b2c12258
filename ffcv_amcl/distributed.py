"""torch.distributed glue: read torchrun's environment, start the process group, gather across ranks.

No launcher here: `torchrun --nproc_per_node=N -m ffcv_amcl.train ...` (or torchrun's multi-node
rendezvous) sets RANK / WORLD_SIZE / LOCAL_RANK, and `init_distributed` picks them up. A plain
`python -m ffcv_amcl.train` is a world of one and never touches torch.distributed.
"""
from __future__ import annotations

import dataclasses
import os
import warnings

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import nn

from ffcv_amcl.errors import UserError

# torch.distributed.nn.functional.all_gather is the documented differentiable gather (its backward sums
# the gradients of every rank's copy); torch marks it deprecated in favour of a private module.
warnings.filterwarnings("ignore", message=r".*torch\.distributed\.nn\.functional\.all_(gather|reduce).*",
                        category=FutureWarning)


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env_world() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's variables; (0, 1, 0) outside torchrun."""
    try:
        return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError as exc:
        raise UserError(f"bad torchrun environment ({exc}): launch with torchrun or unset RANK/WORLD_SIZE")


def pick_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """`auto` -> cuda:LOCAL_RANK when a GPU exists, else cpu."""
    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"unknown training.device '{device}': use auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("training.device=cuda but no CUDA device is visible: use --training.device=cpu")
    if device in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_distributed(backend: str = "auto", device: str = "auto") -> DistInfo:
    """Start the default process group when torchrun launched several processes (NCCL on GPU, gloo on CPU)."""
    rank, world, local = env_world()
    dev = pick_device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        if backend == "auto":
            backend = "nccl" if dev.type == "cuda" else "gloo"
        if backend not in ("nccl", "gloo"):
            raise UserError(f"unknown dist.backend '{backend}': use auto, nccl or gloo")
        dist.init_process_group(backend=backend, rank=rank, world_size=world,
                                device_id=dev if dev.type == "cuda" else None)
    return DistInfo(rank, world, local, dev)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def gather_with_grad(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Concatenate every rank's `x` along `dim`, rank order; gradients flow back to each rank's part."""
    if world_size() == 1:
        return x
    return torch.cat(dist_nn.all_gather(x.contiguous()), dim=dim)


@torch.no_grad()
def gather_no_grad(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Concatenate every rank's `x` along `dim` (rank order), without autograd (MoCo keys)."""
    if world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=dim)


def mean_across_ranks(x: torch.Tensor) -> torch.Tensor:
    """Average of a detached tensor over ranks (for logging)."""
    if world_size() == 1:
        return x
    x = x.detach().clone()
    dist.all_reduce(x)
    return x / world_size()


def sum_across_ranks(x: torch.Tensor) -> torch.Tensor:
    """Sum of a detached tensor over ranks (histograms); a copy, x is left as it is."""
    x = x.detach().clone()
    if world_size() > 1:
        dist.all_reduce(x)
    return x


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is true on any rank (a SIGTERM seen by one process stops all)."""
    if world_size() == 1:
        return bool(flag)
    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    x = torch.tensor([1.0 if flag else 0.0], device=dev)
    dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return bool(x.item() > 0)


def broadcast_object(obj, src: int = 0):
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def _global_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Batch norm of x (N, C, ...) with statistics over every rank's batch: two differentiable
    all-reduces (the mean, then the centred second moment), running stats updated as torch does."""
    dims = [0, *range(2, x.dim())]
    shape = (1, x.shape[1], *([1] * (x.dim() - 2)))
    count = dist_nn.all_reduce(torch.tensor(float(x.numel() // x.shape[1]), device=x.device))
    mean = dist_nn.all_reduce(x.sum(dim=dims)) / count
    centred = x - mean.view(shape)
    var = dist_nn.all_reduce(centred.pow(2).sum(dim=dims)) / count
    if bn.track_running_stats:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            unbiased = var * count / (count - 1).clamp(min=1)
            bn.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            bn.running_var.mul_(1 - m).add_(unbiased.detach(), alpha=m)
    out = centred * torch.rsqrt(var + bn.eps).view(shape)
    if bn.affine:
        out = out * bn.weight.view(shape) + bn.bias.view(shape)
    return out


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose batch statistics span all ranks, for CPU/gloo runs.

    torch's SyncBatchNorm only runs on GPUs; this does the same on any backend, so a 2-process CPU run
    normalises exactly like one process holding the whole batch.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and world_size() > 1):
            return super().forward(x)
        return _global_batch_norm(self, x)


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d over (N, F) with statistics across ranks (projector/predictor BN layers on CPU)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and world_size() > 1) or x.dim() != 2:
            return super().forward(x)
        return _global_batch_norm(self, x)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """SyncBatchNorm on GPUs; GlobalBatchNorm{1,2}d elsewhere (same statistics, any backend)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert_cpu(module)


def _convert_cpu(module: nn.Module) -> nn.Module:
    out = module
    kind = {nn.BatchNorm2d: GlobalBatchNorm2d, nn.BatchNorm1d: GlobalBatchNorm1d}.get(type(module))
    if kind is not None:  # reuse the same Parameter/buffer objects, as torch's converter does
        out = kind(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        if module.track_running_stats:
            out.running_mean, out.running_var = module.running_mean, module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _convert_cpu(child))
    return out
