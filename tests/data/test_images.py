"""Source images of every Pillow mode become the right 8-bit RGB (16-bit scaled, not clipped to white), and an
ImageFolder skips hidden entries and refuses an empty class folder instead of shifting every label."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ffcv_amcl.data.imagefolder import ImageFolder
from ffcv_amcl.data.pixels import to_rgb8
from ffcv_amcl.errors import UserError


def _grey3(values) -> np.ndarray:
    return np.repeat(np.asarray(values, np.uint8)[..., None], 3, axis=-1)


def test_16_bit_png_gradient_is_scaled_to_8_bits(tmp_path):
    ramp = np.linspace(0, 65535, 256 * 4).round().astype(np.uint16).reshape(16, 64)  # the full 16-bit range
    (tmp_path / "train" / "scan").mkdir(parents=True)
    Image.fromarray(ramp).save(tmp_path / "train" / "scan" / "ramp.png")  # a 16-bit greyscale PNG
    with Image.open(tmp_path / "train" / "scan" / "ramp.png") as im:
        assert im.mode.startswith("I")  # what Pillow hands over: the case that used to turn white
    image, label = ImageFolder(tmp_path, "train")[0]
    expected = np.floor(ramp.astype(np.float64) * 255 / 65535 + 0.5)  # v * 255/65535, to the nearest
    np.testing.assert_array_equal(image, _grey3(expected))
    assert label == 0 and image.dtype == np.uint8 and image[0, 0, 0] == 0 and image[-1, -1, 0] == 255


def _image(mode: str, data: np.ndarray):
    """A Pillow image of `mode` holding `data` (P: palette indices, palette k -> (k, 255 - k, 7))."""
    if mode == "I;16B":
        return Image.frombuffer(mode, data.shape[::-1], data.astype(">u2").tobytes(), "raw", mode, 0, 1)
    if mode == "P":
        return _palette(data)
    if mode in ("LA", "CMYK"):
        return Image.frombuffer(mode, data.shape[1::-1], np.ascontiguousarray(data).tobytes(), "raw", mode, 0, 1)
    return Image.fromarray(data)  # I from int32, F from float32


def _palette(index: np.ndarray):
    im = Image.fromarray(index.astype(np.uint8), "L").convert("P")
    im.putpalette([v for k in range(256) for v in (k, 255 - k, 7)])
    return im


V16 = np.array([[0, 257, 32896], [65535, 1000, 65278]], np.uint16)
V8 = np.array([[0, 1, 128], [255, 4, 254]], np.uint8)  # round(v / 257)
CASES = {
    "I;16B": (V16, _grey3(V8)),
    "I": (V16.astype(np.int32), _grey3(V8)),
    "F": (np.array([[0, 0.5, 1.0], [0.25, 0.002, 1.0]], np.float32), _grey3([[0, 128, 255], [64, 1, 255]])),
    "LA": (np.dstack([V8, np.full_like(V8, 9)]), _grey3(V8)),
    "CMYK": (np.dstack([V8, 255 - V8, np.full_like(V8, 40), np.zeros_like(V8)]),
             np.dstack([255 - V8, V8, np.full_like(V8, 215)])),
    "P": (V8, np.dstack([V8, 255 - V8, np.full_like(V8, 7)])),
}


@pytest.mark.parametrize("mode", CASES)
def test_every_mode_converts_to_the_expected_rgb(mode):
    data, expected = CASES[mode]
    im = _image(mode, data)
    assert im.mode == mode
    out = to_rgb8(im, "x.png")
    assert out.dtype == np.uint8 and out.shape == expected.shape
    np.testing.assert_array_equal(out, expected)


def test_values_with_no_8_bit_reading_are_refused():
    with pytest.raises(UserError, match=r"^image scan\.tif \(I\) has values outside 0\.\.65535: convert it"):
        to_rgb8(Image.fromarray(np.array([[0, 70000]], np.int32)), "scan.tif")


def _folder(root, files):
    for rel in files:
        p = root / "train" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 4, 3), len(rel), np.uint8)).save(p)


def test_hidden_folders_and_files_are_skipped(tmp_path):
    _folder(tmp_path, ["cat/a.png", "cat/._a.png", ".ipynb_checkpoints/b.png", "dog/c.png", "dog/d.png"])
    folder = ImageFolder(tmp_path, "train")
    assert folder.classes == ["cat", "dog"]
    assert [p.name for p in folder.files] == ["a.png", "c.png", "d.png"]
    assert folder.labels.tolist() == [0, 1, 1]


def test_an_empty_class_folder_is_an_error_naming_it(tmp_path):
    _folder(tmp_path, ["ant/a.png", "cow/c.png"])
    (tmp_path / "train" / "bee").mkdir()
    (tmp_path / "train" / "bee" / "notes.txt").write_text("no images here")
    with pytest.raises(UserError, match=rf"^class folder {tmp_path}/train/bee holds no \.jpg/\.jpeg/\.png image"):
        ImageFolder(tmp_path, "train")
