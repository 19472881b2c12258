"""Common base of the per-view augmentation stages.

Stages act on the decoder's (B, V, S, S, 3) uint8 batch in place. View v of sample i only ever
touches images[i, v]: the views are disjoint slices of one buffer, so an in-place stage on one view
cannot change the other. Each stage gets the batch's sample indices (FFCV's `with_indices`) to key
the per-image random streams.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ffcv.pipeline.operation import Operation


class ViewStage(Operation):
    """enabled[v] says whether the stage applies to view v (e.g. a weak key view in ASCL)."""

    def __init__(self, *, seed: int, epoch_address: int, enabled: Sequence[bool] = (True, True)):
        super().__init__()
        self.seed = int(seed)
        self.epoch_address = int(epoch_address)
        self.enabled = np.array([bool(e) for e in enabled], dtype=np.bool_)

    def declare_state_and_memory(self, previous_state):
        if len(previous_state.shape) != 4 or previous_state.shape[0] != len(self.enabled):
            raise ValueError(f"{type(self).__name__} expects (views, H, W, 3) input from "
                             f"TwoViewDecoder, got {previous_state.shape}")
        return previous_state, None

    @staticmethod
    def finish(fn):
        fn.is_parallel = True
        fn.with_indices = True
        return fn
