"""The benchmark scripts' data: what they write, the package's readers accept."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks.common import kept_beton, photo_crops
from benchmarks.loader import write_ffcv
from ffcv_amcl.data.beton import validate_beton
from ffcv_amcl.data.meta import meta_path, read_meta


@pytest.mark.parametrize("mode, sides, max_resolution", [("raw", (32, 32), None), ("jpg", (60, 90), 64)])
def test_the_loader_benchmarks_betons_pass_every_readers_check(tmp_path, capsys, mode, sides, max_resolution):
    items = [(np.asarray(im), y) for im, y in photo_crops(12, 0, *sides)]
    path = tmp_path / f"{mode}.beton"
    write_ffcv(path, items, mode, max_resolution=max_resolution)
    assert validate_beton(path) == 12
    meta = read_meta(path)
    assert meta["num_classes"] == 10 and meta["write_mode"] == mode
    assert "wrote 12 images" not in capsys.readouterr().out        # the table's stdout stays the table's


def test_a_kept_beton_is_used_again_only_when_every_reader_would_accept_it(tmp_path):
    """kept_beton: a .beton the benchmarks wrote is kept; one missing, without its sidecar or cut short is not."""
    path = tmp_path / "kept.beton"
    assert not kept_beton(path)
    write_ffcv(path, [(np.asarray(im), y) for im, y in photo_crops(12, 0, 32, 32)], "raw")
    assert kept_beton(path)
    sidecar = meta_path(path).read_bytes()
    meta_path(path).unlink()
    assert not kept_beton(path)
    meta_path(path).write_bytes(sidecar)
    path.write_bytes(path.read_bytes()[:-100])
    assert not kept_beton(path)
