"""Augmentation stage code compiled once per process for each setting, shared by every loader built with it.

FFCV compiles each operation's code anew for every Loader: seconds of numba per SSL loader on a CPU, paid again
by a second run in one process or a notebook cell run twice, although two loaders with the same settings run the
same code. A stage's code is a closure over its settings; `compile_shared` compiles it once per distinct (code,
captured values, thread mode) and keeps it. What differs between loaders of one setting (the seed, the address of
the loader's epoch counter) is not captured: `run_with` hands it to the shared code at run time, calling it from
FFCV's uncompiled stage (the stages declare `jit_mode=False`), once per batch. The decoder stays FFCV's to
compile: FFCV compiles every decoder, and its code calls FFCV's own per-loader reader.
"""
from __future__ import annotations

import numpy as np
from numba.core.dispatcher import Dispatcher

from ffcv.pipeline.compiler import Compiler

_COMPILED: dict = {}


def compile_shared(fn):
    """`fn` compiled as FFCV compiles an operation's code (its flags, `parallel` from `fn.is_parallel` and the
    loader's thread count), or the function compiled before for the same code and captured values."""
    try:
        key = (fn.__code__, _frozen_cells(fn), _frozen_globals(fn), Compiler.is_enabled,
               getattr(fn, "is_parallel", False) and Compiler.num_threads > 1)
        hash(key)
    except TypeError:  # a captured value with no stable identity: compiled for this loader alone
        return Compiler.compile(fn)
    if key not in _COMPILED:
        _COMPILED[key] = Compiler.compile(fn)
    return _COMPILED[key]


def _frozen_cells(fn) -> tuple:
    return tuple(_frozen(cell.cell_contents) for cell in fn.__closure__ or ())


def _frozen_globals(fn) -> tuple:
    """The module globals the code reads (numba freezes them at compile time): a reloaded or patched module
    gets code of its own."""
    names = [n for n in fn.__code__.co_names if n in fn.__globals__]
    return tuple((n, _frozen(fn.__globals__[n])) for n in names)


def _frozen(value):
    """A hashable stand-in equal for values the compiled code cannot tell apart."""
    if isinstance(value, np.ndarray):
        return "array", value.dtype.str, value.shape, value.tobytes()
    if isinstance(value, Dispatcher):   # a module's compiled function (draw, transform): one object per process
        return "jit", value
    if isinstance(value, (tuple, list)):
        return type(value).__name__, tuple(_frozen(v) for v in value)
    return type(value), value


def run_with(shared, ints: np.ndarray):
    """An FFCV stage (`with_indices`, outside FFCV's compiled stages: `jit_mode=False`) that calls
    `shared(images, indices, ints)` from Python, one call per batch; the shared code releases the GIL."""
    def stage(images, _dst, indices):
        return shared(images, indices, ints)

    stage.with_indices = True
    return stage

