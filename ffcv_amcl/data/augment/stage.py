"""Common base of the per-view augmentation stages.

Stages act in place on the decoder's (B, row_bytes) uint8 batch, whose rows hold each sample's views one after
the other (layout.py). View v of sample i only ever touches its own bytes of row i: the views are disjoint slices
of one buffer, so an in-place stage on one view cannot change another. Each stage gets the batch's sample
indices (FFCV's `with_indices`) to key the per-image random streams, one stream per (view, family).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np
from numba import njit

from ffcv.pipeline.compiler import Compiler
from ffcv.pipeline.operation import Operation

from .layout import ViewLayout
from .rng import read_counter, runtime_ints, stream_key
from .shared_code import compile_shared, run_with


def on_a_copy(inplace, img, *args):
    """The functional form of an in-place operation (what the tests compare with torchvision's): a contiguous
    copy of img, changed; img itself untouched."""
    out = np.ascontiguousarray(img).copy()
    inplace(out, *args)
    return out


@njit(cache=True, inline="always", error_model="numpy")
def view_image(row, offset, side):
    """View `side` x `side` x 3 of a sample's row, starting at byte `offset` (a view of the buffer, no copy)."""
    return row[offset:offset + side * side * 3].reshape((side, side, 3))


class ViewStage(Operation):
    """enabled[v] says whether the stage applies to view v (e.g. a weak key view in ASCL); every view by default.

    A subclass gives `act(image, key, v)`, compiled: what the stage does to view v, whose stream of the stage's
    `family` is `key`; `per_view_code` wraps it in the loop over samples and views."""

    family = 0

    def __init__(self, *, layout: ViewLayout, seed: int, epoch_address: int,
                 enabled: Sequence[bool] | None = None):
        super().__init__()
        self.layout = layout
        self.seed = int(seed)
        self.epoch_address = int(epoch_address)
        enabled = (True,) * len(layout) if enabled is None else enabled
        if len(enabled) != len(layout):
            raise ValueError(f"{type(self).__name__}: {len(enabled)} enabled flags for {len(layout)} views")
        self.enabled = np.array([bool(e) for e in enabled], dtype=np.bool_)

    def per_view(self, value) -> np.ndarray:
        """A number for every view: `value` itself when it is one number, else one per view."""
        return np.broadcast_to(np.asarray(value, dtype=np.float64), (len(self.layout),)).copy()

    def declare_state_and_memory(self, previous_state):
        if previous_state.shape != (self.layout.row_bytes,):
            raise ValueError(f"{type(self).__name__} expects rows of {self.layout.row_bytes} bytes from "
                             f"MultiViewDecoder with the same layout, got {previous_state.shape}")
        # FFCV calls the shared code (compiled once, shared_code.py) from its uncompiled stage; an FFCV jit
        # operation placed after a ViewStage would then run there too, as Python (the package places none)
        return replace(previous_state, jit_mode=False), None

    def per_view_code(self, act):
        """The stage's FFCV code: act(view image, stream key, v) for every enabled view of every sample, compiled
        once per process for each setting (shared_code.py); the seed and the epoch reach it at run time."""
        my_range = Compiler.get_iterator()
        act = compile_shared(act)
        enabled, family = self.enabled, self.family
        offsets, sides = self.layout.offsets, self.layout.sides

        def stage(images, indices, ints):
            seed, epoch = ints[0], read_counter(ints[1])
            for i in my_range(images.shape[0]):
                for v in range(len(offsets)):
                    if enabled[v]:
                        act(view_image(images[i], offsets[v], sides[v]),
                            stream_key(seed, epoch, indices[i], v, family), v)
            return images

        stage.is_parallel = True
        return run_with(compile_shared(stage), runtime_ints(self.seed, self.epoch_address))


class ToggleStage(ViewStage):
    """A stage that applies one in-place transform to view v with probability p[v], its own draw deciding: a
    subclass names the compiled `draw(key, p)` and `transform(image)` and its default p."""

    default_p = 0.5

    def __init__(self, *, p=None, **kwargs):
        super().__init__(**kwargs)
        self.p = self.per_view(self.default_p if p is None else p)

    def generate_code(self):
        p, draw, transform = self.p, type(self).draw, type(self).transform

        def act(image, key, v):
            if draw(key, p[v]):
                transform(image)

        return self.per_view_code(act)
