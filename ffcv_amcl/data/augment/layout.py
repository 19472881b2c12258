"""Where a sample's views lie in the pipeline's buffer: one flat uint8 row per sample, view after view.

The decoder writes view v (side s_v, HWC) at bytes [offset_v, offset_v + 3 s_v^2) of its sample's row and every
stage walks the same offsets (stage.view_image), so a batch costs the pixels its views hold, whatever their
number and sizes: two 224 px global views and six 96 px local ones fill one (B, 2*224^2*3 + 6*96^2*3) buffer.
Views 0 and 1 are the global views a and b, views 2.. the local views of multi-crop (recipe.py).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


class ViewLayout:
    """sides[v]: the side of view v; offsets[v], nbytes[v]: where it starts in a sample's row and its length."""

    def __init__(self, sides: Sequence[int]):
        sides = [int(s) for s in sides]
        if not sides or min(sides) <= 0:
            raise ValueError(f"a layout needs at least one view of positive side, got {sides!r}")
        self.sides = np.asarray(sides, dtype=np.int64)
        self.nbytes = 3 * self.sides * self.sides
        self.offsets = np.concatenate([[0], np.cumsum(self.nbytes)[:-1]]).astype(np.int64)
        self.row_bytes = int(self.nbytes.sum())

    def __len__(self) -> int:
        return len(self.sides)

    def check_run(self, first: int, count: int) -> int:
        """The common side of views first .. first + count - 1 (ValueError if they differ or do not exist)."""
        if count < 1 or first < 0 or first + count > len(self):
            raise ValueError(f"views {first}..{first + count - 1} of a {len(self)}-view layout")
        sides = set(self.sides[first:first + count].tolist())
        if len(sides) != 1:
            raise ValueError(f"views {first}..{first + count - 1} have different sides {sorted(sides)}")
        return int(self.sides[first])

    def images(self, batch: np.ndarray, first: int, count: int = 1) -> np.ndarray:
        """Views first .. first + count - 1 of every sample of a (B, row_bytes) batch, one side, as a new
        (count * B, s, s, 3) array ordered view-major: every sample's view `first`, then every sample's next."""
        side = self.check_run(first, count)
        start = int(self.offsets[first])
        block = batch[:, start:start + count * 3 * side * side].reshape(len(batch), count, side, side, 3)
        return np.ascontiguousarray(block.swapaxes(0, 1)).reshape(count * len(batch), side, side, 3)
