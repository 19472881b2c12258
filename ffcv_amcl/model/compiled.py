"""torch.compile for the training step (training.compile=1): each part of a method compiled in place.

    from ffcv_amcl.model.compiled import compile_model
    model = build_model(cfg, device=device)
    compile_model(model)                 # before DistributedDataParallel wraps it

`compile_model` calls `nn.Module.compile()` on every child of the method that holds parameters: the
backbone, the projection heads, a predictor, momentum copies and, with `loss=True`, the AMCL loss module
(phi, the batched similarities, top-k and the per-pair terms fuse into a few kernels). So:
  - the state_dict keys do not change (no `_orig_mod.` prefix of a wrapper): checkpoints of compiled and
    eager runs load into either;
  - the method's own forward (concatenating the views, slicing, the cross-rank gather) stays eager, so the
    collective is no graph break and DistributedDataParallel wraps the model as before;
  - the classic losses (NT-Xent, InfoNCE, ...) are plain functions inside that forward and stay eager.
Call it after any `copy.deepcopy` of the model (a copy of a compiled module would still call the original's
forward). The first steps compile (tens of seconds on a GPU, minutes on a small CPU); the backbone compiles
once more for its first eval-mode pass (kNN monitor).

The backend is inductor unless `backend` or the environment variable FFCV_AMCL_COMPILE_BACKEND names another
(`aot_eager`, `eager`: torch's cheap debugging backends, used by tests and the GPU run's CPU dry run).
"""
from __future__ import annotations

import os

from torch import nn

DEFAULT_BACKEND = "inductor"
LOSS_CHILD = "criterion"


def compile_backend(backend: str | None = None) -> str:
    """The backend `compile_model` uses: the argument, else $FFCV_AMCL_COMPILE_BACKEND, else inductor."""
    return backend or os.environ.get("FFCV_AMCL_COMPILE_BACKEND") or DEFAULT_BACKEND


def compile_model(model: nn.Module, *, loss: bool = True, backend: str | None = None,
                  mode: str | None = None) -> list[str]:
    """Compile the children of `model` (an SSLModel, or a DistributedDataParallel around one) in place.

    loss: also compile the loss module (`criterion`) when it is an nn.Module. Returns the names compiled.
    """
    core = getattr(model, "module", model)          # DDP: the method inside
    chosen = compile_backend(backend)
    names = []
    for name, child in core.named_children():
        if name == LOSS_CHILD and not loss:
            continue
        if next(child.parameters(), None) is None:  # nothing to fuse (Identity and the like)
            continue
        child.compile(backend=chosen, mode=mode)
        names.append(name)
    return names


def is_compiled(module: nn.Module) -> bool:
    """Whether `module` or any of its submodules was compiled in place by `nn.Module.compile`."""
    return any(getattr(m, "_compiled_call_impl", None) is not None for m in module.modules())
