"""The benchmark scripts' data: what they write, the package's readers accept."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks.common import photo_crops
from benchmarks.loader import write_ffcv
from ffcv_amcl.data.beton import validate_beton
from ffcv_amcl.data.meta import read_meta


@pytest.mark.parametrize("mode, sides, max_resolution", [("raw", (32, 32), None), ("jpg", (60, 90), 64)])
def test_the_loader_benchmarks_betons_pass_every_readers_check(tmp_path, capsys, mode, sides, max_resolution):
    items = [(np.asarray(im), y) for im, y in photo_crops(12, 0, *sides)]
    path = tmp_path / f"{mode}.beton"
    write_ffcv(path, items, mode, max_resolution=max_resolution)
    assert validate_beton(path) == 12
    meta = read_meta(path)
    assert meta["num_classes"] == 10 and meta["write_mode"] == mode
    assert "wrote 12 images" not in capsys.readouterr().out        # the table's stdout stays the table's
