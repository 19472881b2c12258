"""Input checks shared by every loss: a user's shape or value mistake becomes one clear UserError line.

Shape checks are free (no device work). The non-finite check needs one host sync per call, so every loss
lets the caller switch it off (`validate=False`) once a run is known to be healthy.
"""
from __future__ import annotations

import torch

from ffcv_amcl.errors import UserError


def _shape(x: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in x.shape) + ")"


def tensor(owner: str, name: str, x, ndims: tuple[int, ...]) -> torch.Tensor:
    """Require a floating tensor with one of the allowed numbers of dimensions."""
    if not isinstance(x, torch.Tensor):
        raise UserError(f"{owner}: {name} must be a torch.Tensor, got {type(x).__name__}; "
                        "pass the projections as tensors")
    if not x.is_floating_point():
        raise UserError(f"{owner}: {name} has dtype {x.dtype}; pass floating-point projections")
    if x.dim() not in ndims:
        want = " or ".join(f"{n}-D" for n in ndims)
        raise UserError(f"{owner}: {name} has shape {_shape(x)} but must be {want} (heads, batch, dim); "
                        "stack the heads' projections on the first axis")
    return x


def views(owner: str, named: dict[str, torch.Tensor], *, heads: int | None = None, dim: int | None = None,
          min_batch: int = 2, ndims: tuple[int, ...] = (3,)) -> tuple[int, ...]:
    """Check that all view stacks share one shape (C, B, D) and match the module's heads and dim."""
    items = list(named.items())
    for name, x in items:
        tensor(owner, name, x, ndims)
    first_name, first = items[0]
    for name, x in items[1:]:
        if x.shape != first.shape:
            raise UserError(f"{owner}: {name} has shape {_shape(x)} but {first_name} has {_shape(first)}; "
                            "pass every view with the same (heads, batch, dim) shape")
    shape = tuple(first.shape)
    if first.dim() == 3 and heads is not None and shape[0] != heads:
        raise UserError(f"{owner}: inputs have {shape[0]} heads (first axis of {first_name} {_shape(first)}) but the "
                        f"loss was built with heads={heads}; build it with heads={shape[0]} or pass {heads} heads")
    if dim is not None and shape[-1] != dim:
        raise UserError(f"{owner}: inputs have dimension {shape[-1]} (last axis of {first_name}) but the loss was "
                        f"built with dim={dim}; build it with dim={shape[-1]}")
    if shape[-2] < min_batch:
        raise UserError(f"{owner}: batch size {shape[-2]} is too small (need at least {min_batch}); "
                        "use a larger batch")
    return shape


def inputs(owner: str, validate: bool, **named: torch.Tensor) -> tuple[int, ...]:
    """A pure loss's view stacks checked once: one shared (C, B, D) shape, and finite values when `validate`."""
    shape = views(owner, named)
    if validate:
        finite(owner, named)
    return shape


def finite(owner: str, named: dict[str, torch.Tensor]) -> None:
    """Raise if any tensor holds NaN or inf; costs one host sync for all tensors together."""
    if not named:
        return
    flags = torch.stack([torch.isfinite(x).all() for x in named.values()])
    if bool(flags.all()):
        return
    bad = [name for name, ok in zip(named, flags.tolist()) if not ok]
    raise UserError(f"{owner}: non-finite values (NaN or inf) in {', '.join(bad)}; the model diverged or the "
                    "data is corrupt — lower the learning rate or check the inputs")


def positive_int(owner: str, name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{owner}: {name}={value!r} must be an integer >= {minimum}")
    return value


def tau_bounds(owner: str, tau_min, tau_max) -> tuple[float, float]:
    try:
        lo, hi = float(tau_min), float(tau_max)
    except (TypeError, ValueError):
        raise UserError(f"{owner}: tau_min={tau_min!r}, tau_max={tau_max!r} must be numbers with "
                        "0 < tau_min < tau_max") from None
    if not (0.0 < lo < hi < float("inf")):
        raise UserError(f"{owner}: temperature bounds tau_min={tau_min!r}, tau_max={tau_max!r} are invalid; "
                        "need 0 < tau_min < tau_max (defaults 1e-5 and 2.0)")
    return lo, hi


def non_negative(owner: str, name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{owner}: {name}={value!r} must be a number >= 0") from None
    if not (v >= 0.0 and v < float("inf")):
        raise UserError(f"{owner}: {name}={value!r} must be a finite number >= 0")
    return v


def positive(owner: str, name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{owner}: {name}={value!r} must be a number > 0") from None
    if not (v > 0.0 and v < float("inf")):
        raise UserError(f"{owner}: {name}={value!r} must be a finite number > 0")
    return v
