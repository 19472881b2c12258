"""See what the augmentation pipeline does: a PNG grid of stored images and their two views.

    python -m ffcv_amcl.data.preview --path X.beton --augs abcde --n 16 --out grid.png

Each row shows one stored image (centre view, as evaluation sees it) followed by its views a and b
for the given seed and epoch.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ffcv_amcl.data.augment.spec import AUGS_HELP
from ffcv_amcl.errors import ArgumentParser, UserError, check_output_file, cli


def collect(path, augs, n, image_size, seed, epoch, augs_b=None, color_strength=0.5):
    """(originals, view_a, view_b) uint8 arrays (n, S, S, 3) for the first n samples."""
    from ffcv.fields.basics import IntDecoder
    from ffcv.loader import OrderOption

    from ffcv_amcl.data.augment import EpochCounter, TwoViewDecoder, view_letters
    from ffcv_amcl.data.beton import validate_beton
    from ffcv_amcl.data.loader import GuardedLoader, _check_common, build_image_pipeline, by_name

    letters_a, letters_b = view_letters(augs, augs_b, flags=("augs", "augs-b"))
    _check_common(path, 1, image_size, "cpu")  # validates the whole file (validate_beton)
    if n <= 0:
        raise UserError(f"--n must be positive, got {n}")
    n = min(int(n), validate_beton(path))
    counter = EpochCounter(epoch)
    indices = np.arange(n)
    common = dict(batch_size=n, num_workers=1, order=OrderOption.SEQUENTIAL, drop_last=False)
    views = GuardedLoader(str(path), indices=indices, pipelines={
        "image": build_image_pipeline(letters_a, letters_b, image_size, seed=seed,
                                      epoch_address=counter.address,
                                      color_strength=color_strength),
        "label": [IntDecoder()]}, **common)
    plain = GuardedLoader(str(path), indices=indices, pipelines={
        "image": [TwoViewDecoder(image_size, random_crop=(False,), seed=seed,
                                 epoch_address=counter.address, stretch=True)],
        "label": None}, **common)
    images = by_name(views, next(iter(views)))["image"]
    originals = by_name(plain, next(iter(plain)))["image"]
    return originals[:, 0].copy(), images[:, 0].copy(), images[:, 1].copy()


def draw_grid(originals, view_a, view_b, out, title=""):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ffcv_amcl.atomic import atomic_path

    n = len(originals)
    fig, axes = plt.subplots(n, 3, figsize=(4.5, 1.5 * n + 0.4), squeeze=False)
    for i in range(n):
        for j, (img, name) in enumerate(((originals[i], "stored"), (view_a[i], "view a"),
                                         (view_b[i], "view b"))):
            ax = axes[i, j]
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


@cli
def main(argv=None):
    parser = ArgumentParser(prog="python -m ffcv_amcl.data.preview", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", required=True, help=".beton file to read")
    parser.add_argument("--augs", default="default", help=f"augmentations of view a: {AUGS_HELP}")
    parser.add_argument("--augs-b", default="", help="augmentations of view b, as --augs ('' = the same as --augs)")
    parser.add_argument("--n", type=int, default=16, help="number of stored images to show")
    parser.add_argument("--image-size", type=int, default=32, help="side of each view in pixels")
    parser.add_argument("--color-strength", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epoch", type=int, default=0)
    parser.add_argument("--out", default="augment_preview.png", help="PNG file to write")
    args = parser.parse_args(argv)
    if not str(args.out).lower().endswith(".png"):
        raise UserError(f"--out must name a .png file, got {args.out!r}")
    check_output_file(args.out, "--out")  # before the work, not after it
    originals, a, b = collect(args.path, args.augs, args.n, args.image_size, args.seed,
                              args.epoch, augs_b=args.augs_b, color_strength=args.color_strength)
    draw_grid(originals, a, b, args.out,
              title=f"{Path(args.path).name}  augs={args.augs}  seed={args.seed}  epoch={args.epoch}")
    print(f"wrote {args.out} ({len(originals)} images, views of {args.image_size} px)")


if __name__ == "__main__":
    main()
