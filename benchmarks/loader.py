"""Two-view and multi-crop loading throughput, side by side in one run on the same cores and data.

    python -m benchmarks.loader [--size cifar|imagenet|both] [--workers 2] [--json out.json]

Rows, per setting:
  ffcv_amcl two-view abcde   this project's loader: decode once, two random resized crops, flip,
                             colour jitter, colour drop, blur (p = 0.5 per view), float normalisation (pairs/s)
  ffcv_amcl multi-crop       the same with 6 local views (2x32 + 6x16 at 32 px, 2x224 + 6x96 at 224 px) from
                             the same single decode (images/s: one image = its 8 views); beside the two-view
                             row, its time per image against the pixels it writes per image
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
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import kept_beton, photo_crops


def write_ffcv(path, items, mode, max_resolution=None):
    """(PIL image or uint8 array, label) items as a .beton with its sidecar, through the package's writer (every
    reader checks the sidecar); its `wrote` line goes to stderr, away from the table."""
    from ffcv_amcl.data.write import ArrayDataset, write_beton

    images = [np.asarray(im) for im, _ in items]
    with contextlib.redirect_stdout(sys.stderr):
        write_beton(path, ArrayDataset(images, np.array([y for _, y in items])), write_mode=mode,
                    max_resolution=max_resolution, jpeg_quality=90, num_workers=2,
                    meta={"dataset": "photo-crops", "split": "train", "num_classes": 10})


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


TWO_VIEW = "ffcv_amcl two-view abcde"
FLOOR = "ffcv decode+crop+flip (1 view)"
TORCHVISION = "torchvision + PIL two-view"
LOCAL_CROPS = 6
SIMCLR_BLUR = (0.5, 0.5)  # blur p of both views, as the torchvision baseline's RandomApply


def multi_crop_row(size: int) -> str:
    from ffcv_amcl.data.augment.recipe import default_local_size

    return f"ffcv_amcl multi-crop 2x{size} + {LOCAL_CROPS}x{default_local_size(size)}"


def prepare(name, workdir):
    """(the .beton, the global views' side, the torchvision dataset) of setting `name`, written once."""
    beton = workdir / f"{name}.beton"
    if name == "cifar":
        items = list(photo_crops(12_000, 0, 32, 32))
        if not kept_beton(beton):
            write_ffcv(beton, [(np.asarray(im), y) for im, y in items], "raw")
        arrays = np.stack([np.asarray(im) for im, _ in items])
        labels = np.array([y for _, y in items])
        return beton, 32, ArrayImages(arrays, labels, torchvision_views(32))
    root = workdir / "imagefolder"
    if not kept_beton(beton):
        items = []
        for k, (im, y) in enumerate(photo_crops(400, 1, 300, 640)):
            d = root / f"class{y}"
            d.mkdir(parents=True, exist_ok=True)
            im.save(d / f"{k:05d}.jpg", quality=90)
            items.append((np.asarray(im), y))
        write_ffcv(beton, items, "jpg", max_resolution=640)
    return beton, 224, TwoViewFolder(root, torchvision_views(224))


def ffcv_rows(beton, size, workers, seconds, batch_size):
    """Our two-view and multi-crop loaders (images/s: one pair, or one 2 + N set of views, per image) and FFCV's
    one-view floor, one after the other on the same data."""
    from ffcv.fields.rgb_image import RandomResizedCropRGBImageDecoder
    from ffcv.fields.basics import IntDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import RandomHorizontalFlip

    from ffcv_amcl.data.loader import make_ssl_loader

    ahead = 3 + 2  # FFCV's default batches_ahead, plus margin
    results = {}
    for row, local_crops, unit in ((TWO_VIEW, 0, "pairs/s"), (multi_crop_row(size), LOCAL_CROPS, "images/s")):
        ours = make_ssl_loader(beton, batch_size, augs="abcde", image_size=size, num_workers=workers, seed=0,
                               local_crops=local_crops, blur_p=SIMCLR_BLUR)
        results[row] = (unit, timed(lambda: forever(lambda: ours, lambda b: len(b[2])), seconds, 1 + ahead))
        del ours
    floor = Loader(str(beton), batch_size=batch_size, num_workers=workers, order=OrderOption.RANDOM,
                   seed=0, drop_last=True, pipelines={
                       "image": [RandomResizedCropRGBImageDecoder((size, size)), RandomHorizontalFlip()],
                       "label": [IntDecoder()]})
    results[FLOOR] = ("images/s", timed(lambda: forever(lambda: floor, lambda b: len(b[0])), seconds, 1 + ahead))
    return results


def bench_setting(name, workdir, workers, seconds, batch_size):
    beton, size, tv_data = prepare(name, Path(workdir))
    results = ffcv_rows(beton, size, workers, seconds, batch_size)
    torch.set_num_threads(1)
    # spawn: FFCV's threads are alive in this process, and fork() with live threads is unsafe.
    tv = torch.utils.data.DataLoader(tv_data, batch_size=batch_size, shuffle=True,
                                     num_workers=workers, drop_last=True, persistent_workers=True,
                                     prefetch_factor=2, multiprocessing_context="spawn")
    results[TORCHVISION] = ("pairs/s", timed(
        lambda: forever(lambda: tv, lambda b: len(b[2])), seconds, 2 + 2 * workers))
    torch.set_num_threads(workers)
    return size, results


def summary(size, res) -> dict:
    """The ratios the table prints: against torchvision, against the one-view floor, multi-crop against two-view
    (its cost per image beside the pixels it writes per image)."""
    from ffcv_amcl.data.augment.recipe import default_local_size

    ours, tv, floor = res[TWO_VIEW][1], res[TORCHVISION][1], res[FLOOR][1]
    multi = res[multi_crop_row(size)][1]
    pixels = (2 * size ** 2 + LOCAL_CROPS * default_local_size(size) ** 2) / (2 * size ** 2)
    return {"ratio_vs_torchvision": ours / tv, "pairs_vs_floor_images": ours / floor,
            "multi_crop_views_per_s": multi * (2 + LOCAL_CROPS), "multi_crop_vs_floor_images": multi / floor,
            "multi_crop_pixels_vs_two_view": pixels, "multi_crop_time_vs_two_view": ours / multi}


def report(name, size, res, ratios, workers, cpus):
    print(f"\n{name}: {'32x32 raw' if name == 'cifar' else '224 crops of 300-640 px JPEGs'}, "
          f"{workers} workers, {cpus} CPUs")
    print(f"  {'pipeline':34s} {'rate':>10s}  unit")
    for k, (u, r) in res.items():
        print(f"  {k:34s} {r:10.0f}  {u}")
    print(f"  ratio ffcv_amcl / torchvision (pairs/s)      {ratios['ratio_vs_torchvision']:6.2f}x")
    print(f"  ffcv_amcl pairs/s per floor image/s          {ratios['pairs_vs_floor_images']:6.2f}")
    print(f"  multi-crop views/s ({2 + LOCAL_CROPS} per image)         {ratios['multi_crop_views_per_s']:6.0f}")
    print(f"  multi-crop images/s per floor image/s        {ratios['multi_crop_vs_floor_images']:6.2f}")
    print(f"  multi-crop / two-view, pixels per image      {ratios['multi_crop_pixels_vs_two_view']:6.2f}x")
    print(f"  multi-crop / two-view, time per image        {ratios['multi_crop_time_vs_two_view']:6.2f}x")


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
            size, res = bench_setting(name, workdir, args.workers, args.seconds, 256 if name == "cifar" else 64)
            ratios = summary(size, res)
            out["settings"][name] = {**{k: {"unit": u, "rate": r} for k, (u, r) in res.items()}, **ratios}
            report(name, size, res, ratios, args.workers, out["cpus"])
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
