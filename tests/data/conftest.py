"""Small .beton files written with FFCV's own DatasetWriter (no dependency on write_datasets.py)."""
import numpy as np
import pytest

from ffcv_amcl.data.write import ArrayDataset


def photo_patches(n, side, seed=0, min_side=None, max_side=None):
    """Real-looking images: random crops of scikit-learn's sample photographs, resized."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(p) for p in load_sample_images().images]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        ph = photos[i % len(photos)]
        W, H = ph.size
        cw = int(rng.integers(W // 6, W // 2))
        chh = int(rng.integers(H // 6, H // 2))
        x, y = int(rng.integers(0, W - cw)), int(rng.integers(0, H - chh))
        if side is not None:
            size = (side, side)
        else:
            size = (int(rng.integers(min_side, max_side)), int(rng.integers(min_side, max_side)))
        out.append(np.asarray(ph.crop((x, y, x + cw, y + chh)).resize(size, Image.BILINEAR)))
    return out


def write_beton(path, images, labels, *, mode="raw", max_resolution=None, label_first=False,
                fields=None):
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    if fields is None:
        img = RGBImageField(write_mode=mode, max_resolution=max_resolution, jpeg_quality=90)
        fields = {"label": IntField(), "image": img} if label_first else {"image": img, "label": IntField()}
    if "image" not in fields:
        samples = [(int(y),) for y in labels]
    elif list(fields)[0] == "label":  # FFCV takes each sample's values in the fields' order
        samples = [(int(y), x) for x, y in zip(images, labels)]
    else:
        samples = ArrayDataset(images, labels)
    DatasetWriter(str(path), fields, num_workers=1).from_indexed_dataset(samples)
    return str(path)


@pytest.fixture(scope="session")
def small_beton(tmp_path_factory):
    """96 real-looking 32x32 images (raw); label = sample index (tests map rows back to sources);
    with a sidecar meta."""
    from ffcv_amcl.data.meta import write_meta

    images = photo_patches(96, 32)
    labels = np.arange(96)
    path = write_beton(tmp_path_factory.mktemp("beton") / "small.beton", images, labels)
    write_meta(path, {"dataset": "test", "split": "train", "num_samples": 96, "num_classes": 96,
                      "mean": [120.0, 110.0, 100.0], "std": [60.0, 55.0, 50.0]})
    return path, np.stack(images), labels


@pytest.fixture(scope="session")
def jpeg_beton(tmp_path_factory):
    """24 variable-size JPEG images, label = index (label first: field order must not matter); with a sidecar
    meta, as every reader requires."""
    images = photo_patches(24, None, seed=1, min_side=40, max_side=90)
    labels = np.arange(24)
    path = write_beton(tmp_path_factory.mktemp("beton") / "jpg.beton", images, labels, mode="jpg",
                       label_first=True)
    from ffcv_amcl.data.meta import write_meta

    write_meta(path, {"dataset": "test", "split": "train", "num_samples": 24, "num_classes": 24,
                      "mean": [120.0, 110.0, 100.0], "std": [60.0, 55.0, 50.0]})
    return path, images, labels
