"""Two-view loading throughput, side by side in one run on the same cores and data.

    python -m benchmarks.loader [--size cifar|imagenet|both] [--workers 2] [--json out.json]

Rows, per setting:
  ffcv_amcl two-view abcde   this project's loader: decode once, two random resized crops, flip,
                             colour jitter, colour drop, blur, float normalisation (pairs/s)
  ffcv decode+crop+flip      FFCV's own RandomResizedCropRGBImageDecoder + RandomHorizontalFlip,
                             one view (images/s): the floor the extra stages cost against
  torchvision + PIL          DataLoader with the same five families and two views per decoded
                             image, as the reference implementation loads data (pairs/s)
Settings: `cifar` = 32x32 raw images; `imagenet` = 224 crops of 300-640 px JPEGs (ImageFolder for
torchvision, a jpg .beton for FFCV). The data are crops of scikit-learn's sample photographs
(benchmarks.common.photo_crops). The floor row is FFCV's own Loader, as FFCV ships it.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import photo_crops


def write_ffcv(path, items, mode, max_resolution=None):
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    class DS:
        def __len__(self):
            return len(items)

        def __getitem__(self, i):
            return items[i][0], items[i][1]

    fields = {"image": RGBImageField(write_mode=mode, max_resolution=max_resolution, jpeg_quality=90),
              "label": IntField()}
    DatasetWriter(str(path), fields, num_workers=2).from_indexed_dataset(DS())


class ArrayImages(torch.utils.data.Dataset):
    """CIFAR-style: uint8 arrays in memory, a PIL image per sample, two views of it."""

    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        from PIL import Image
        im = Image.fromarray(self.images[i])
        return self.transform(im), self.transform(im), int(self.labels[i])


class TwoViewFolder(torch.utils.data.Dataset):
    """ImageFolder that decodes each JPEG once and crops it twice."""

    def __init__(self, root, transform):
        from torchvision.datasets import ImageFolder
        self.folder = ImageFolder(root)
        self.transform = transform

    def __len__(self):
        return len(self.folder)

    def __getitem__(self, i):
        im, label = self.folder[i]
        return self.transform(im), self.transform(im), label


class PILGaussianBlur:
    """Blur as the MoCo v2 / SimSiam reference code does it: PIL's ImageFilter with a random
    sigma (far faster on PIL images than torchvision's dense 2-D convolution, so the baseline is
    not handicapped)."""

    def __init__(self, sigma=(0.1, 2.0)):
        self.sigma = sigma

    def __call__(self, im):
        import random

        from PIL import ImageFilter
        return im.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))


def torchvision_views(size):
    """The reference pipeline's five families on PIL images (torchvision v1 transforms)."""
    from torchvision import transforms as T

    s = 0.5
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.08, 1.0)),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.RandomApply([PILGaussianBlur((0.1, 2.0))], p=0.5),
        T.ToTensor(),
        T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ])


def timed(batches, seconds, warmup):
    """Items per second over at least `seconds` after `warmup` batches. The first batch compiles
    (FFCV) or starts the workers (torchvision); warm-up also drains what the loader had prepared
    ahead, so the timed part sees steady-state production only."""
    it = batches()
    for _ in range(warmup):
        next(it)
    n, t0 = 0, time.perf_counter()
    while True:
        n += next(it)
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n / dt


def forever(make_iter, count):
    while True:
        for batch in make_iter():
            yield count(batch)


def bench_setting(name, workdir, workers, seconds, batch_size):
    from ffcv.fields.rgb_image import RandomResizedCropRGBImageDecoder
    from ffcv.fields.basics import IntDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import RandomHorizontalFlip

    from ffcv_amcl.data.loader import make_ssl_loader

    workdir = Path(workdir)
    beton = workdir / f"{name}.beton"
    if name == "cifar":
        size = 32
        items = list(photo_crops(12_000, 0, 32, 32))
        if not beton.exists():
            write_ffcv(beton, [(np.asarray(im), y) for im, y in items], "raw")
        arrays = np.stack([np.asarray(im) for im, _ in items])
        labels = np.array([y for _, y in items])
        tv_data = ArrayImages(arrays, labels, torchvision_views(size))
    else:
        size = 224
        root = workdir / "imagefolder"
        if not beton.exists():
            items = []
            for k, (im, y) in enumerate(photo_crops(400, 1, 300, 640)):
                d = root / f"class{y}"
                d.mkdir(parents=True, exist_ok=True)
                im.save(d / f"{k:05d}.jpg", quality=90)
                items.append((np.asarray(im), y))
            write_ffcv(beton, items, "jpg", max_resolution=640)
        tv_data = TwoViewFolder(root, torchvision_views(size))

    results = {}
    ours = make_ssl_loader(beton, batch_size, augs="abcde", image_size=size, num_workers=workers,
                           seed=0)
    ahead = 3 + 2  # FFCV's default batches_ahead, plus margin
    results["ffcv_amcl two-view abcde"] = ("pairs/s", timed(
        lambda: forever(lambda: ours, lambda b: len(b[2])), seconds, 1 + ahead))

    floor = Loader(str(beton), batch_size=batch_size, num_workers=workers, order=OrderOption.RANDOM,
                   seed=0, drop_last=True, pipelines={
                       "image": [RandomResizedCropRGBImageDecoder((size, size)), RandomHorizontalFlip()],
                       "label": [IntDecoder()]})
    results["ffcv decode+crop+flip (1 view)"] = ("images/s", timed(
        lambda: forever(lambda: floor, lambda b: len(b[0])), seconds, 1 + ahead))
    del ours, floor

    torch.set_num_threads(1)
    # spawn: FFCV's threads are alive in this process, and fork() with live threads is unsafe.
    tv = torch.utils.data.DataLoader(tv_data, batch_size=batch_size, shuffle=True,
                                     num_workers=workers, drop_last=True, persistent_workers=True,
                                     prefetch_factor=2, multiprocessing_context="spawn")
    results["torchvision + PIL two-view"] = ("pairs/s", timed(
        lambda: forever(lambda: tv, lambda b: len(b[2])), seconds, 2 + 2 * workers))
    torch.set_num_threads(workers)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loader", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("cifar", "imagenet", "both"), default="both")
    parser.add_argument("--workers", type=int, default=2, help="loader workers for every row")
    parser.add_argument("--seconds", type=float, default=4.0, help="timed seconds per row")
    parser.add_argument("--workdir", default=None, help="keep generated data here (default: temp)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.workers))

    sizes = ("cifar", "imagenet") if args.size == "both" else (args.size,)
    out = {"workers": args.workers, "cpus": len(os.sched_getaffinity(0)), "settings": {}}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or tmp
        Path(workdir).mkdir(parents=True, exist_ok=True)
        for name in sizes:
            batch = 256 if name == "cifar" else 64
            res = bench_setting(name, workdir, args.workers, args.seconds, batch)
            ours = res["ffcv_amcl two-view abcde"][1]
            tv = res["torchvision + PIL two-view"][1]
            floor = res["ffcv decode+crop+flip (1 view)"][1]
            out["settings"][name] = {k: {"unit": u, "rate": r} for k, (u, r) in res.items()}
            out["settings"][name]["ratio_vs_torchvision"] = ours / tv
            out["settings"][name]["pairs_vs_floor_images"] = ours / floor
            print(f"\n{name}: {'32x32 raw' if name == 'cifar' else '224 crops of 300-640 px JPEGs'}, "
                  f"{args.workers} workers, {out['cpus']} CPUs")
            print(f"  {'pipeline':34s} {'rate':>10s}  unit")
            for k, (u, r) in res.items():
                print(f"  {k:34s} {r:10.0f}  {u}")
            print(f"  ratio ffcv_amcl / torchvision (pairs/s)      {ours / tv:6.2f}x")
            print(f"  ffcv_amcl pairs/s per floor image/s          {ours / floor:6.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
