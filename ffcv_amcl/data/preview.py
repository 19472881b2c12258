"""See what the augmentation pipeline does: a PNG grid of stored images and their views.

    python -m ffcv_amcl.data.preview --path X.beton --augs abcde --n 16 --out grid.png
    python -m ffcv_amcl.data.preview --path X.beton --augs abcdef --local-crops 6 --out multicrop.png

Each row shows one stored image (centre view, as evaluation sees it) followed by its views a and b and, with
--local-crops N, its N local views, for the given seed and epoch.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ffcv_amcl.data.augment.recipe import BLUR_P, LOCAL_SCALE, LOCAL_SIZE_RULE, SOLARIZE_P
from ffcv_amcl.data.augment.spec import AUGS_HELP
from ffcv_amcl.errors import ArgumentParser, UserError, check_output_file, cli


def collect(path, augs, n, image_size, seed, epoch, augs_b=None, color_strength=0.5, **settings):
    """(originals, view_a, view_b, local view 1, ...): uint8 arrays (n, side, side, 3) for the first n samples.
    `settings`: make_ssl_loader's view keywords (crop_scale, local_crops, local_size, local_scale, blur_p,
    solarize_p)."""
    from ffcv.fields.basics import IntDecoder
    from ffcv.loader import OrderOption

    from ffcv_amcl.data.augment import EpochCounter, MultiViewDecoder, ViewLayout, ViewRecipe, view_letters
    from ffcv_amcl.data.beton import validate_beton
    from ffcv_amcl.data.loader import GuardedLoader, _check_common, build_image_pipeline, by_name, first_batch

    letters_a, letters_b = view_letters(augs, augs_b, flags=("augs", "augs-b"))
    _check_common(path, 1, image_size, "cpu")  # validates the whole file (validate_beton)
    recipe = ViewRecipe(letters_a, letters_b, image_size, color_strength=color_strength, **settings)
    if n <= 0:
        raise UserError(f"--n must be positive, got {n}")
    n = min(int(n), validate_beton(path))
    counter = EpochCounter(epoch)
    indices = np.arange(n)
    common = dict(batch_size=n, num_workers=1, order=OrderOption.SEQUENTIAL, drop_last=False)
    views = GuardedLoader(str(path), indices=indices, pipelines={
        "image": build_image_pipeline(recipe, seed=seed, epoch_address=counter.address),
        "label": [IntDecoder()]}, **common)
    plain_layout = ViewLayout([image_size])
    plain = GuardedLoader(str(path), indices=indices, pipelines={
        "image": [MultiViewDecoder(plain_layout, random_crop=(False,), seed=seed, epoch_address=counter.address,
                                   stretch=True)],
        "label": None}, **common)
    images = by_name(views, first_batch(views))["image"]
    originals = by_name(plain, first_batch(plain))["image"]
    layout = recipe.layout()
    return (plain_layout.images(originals, 0), *(layout.images(images, v) for v in range(len(layout))))


def view_names(n_views: int) -> list[str]:
    return ["stored", "view a", "view b", *(f"local {k}" for k in range(1, n_views - 1))]


def draw_grid(columns, out, title=""):
    """One row per image, one column per entry of `columns` (stored image, then each view)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ffcv_amcl.atomic import atomic_path

    n, names = len(columns[0]), view_names(len(columns))
    fig, axes = plt.subplots(n, len(columns), figsize=(1.5 * len(columns), 1.5 * n + 0.4), squeeze=False)
    for i in range(n):
        for j, (images, name) in enumerate(zip(columns, names)):
            ax = axes[i, j]
            ax.imshow(images[i], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"{name} ({images.shape[1]} px)" if j > 2 else name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _pair(text: str) -> tuple[float, float]:
    """'0.5,0.2' -> (0.5, 0.2) for the two-number flags (the recipe checks their ranges)."""
    try:
        a, b = (float(v) for v in text.strip("()[] ").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers a,b, got {text!r}") from None
    return a, b


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
    parser.add_argument("--crop-scale", type=_pair, default=(0.08, 1.0), help="global views' crop scale lo,hi")
    parser.add_argument("--local-crops", type=int, default=0, help="local views per image (multi-crop)")
    parser.add_argument("--local-size", type=int, default=0, help=f"side of the local views (0 = {LOCAL_SIZE_RULE})")
    parser.add_argument("--local-scale", type=_pair, default=LOCAL_SCALE, help="local views' crop scale lo,hi")
    parser.add_argument("--blur-p", type=_pair, default=BLUR_P, help="blur probability of views a,b (letter b)")
    parser.add_argument("--solarize-p", type=_pair, default=SOLARIZE_P,
                        help="solarization probability of views a,b (letter f)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epoch", type=int, default=0)
    parser.add_argument("--out", default="augment_preview.png", help="PNG file to write")
    args = parser.parse_args(argv)
    if not str(args.out).lower().endswith(".png"):
        raise UserError(f"--out must name a .png file, got {args.out!r}")
    check_output_file(args.out, "--out")  # before the work, not after it
    columns = collect(args.path, args.augs, args.n, args.image_size, args.seed, args.epoch, augs_b=args.augs_b,
                      color_strength=args.color_strength, crop_scale=args.crop_scale, local_crops=args.local_crops,
                      local_size=args.local_size, local_scale=args.local_scale, blur_p=args.blur_p,
                      solarize_p=args.solarize_p)
    draw_grid(columns, args.out,
              title=f"{Path(args.path).name}  augs={args.augs}  seed={args.seed}  epoch={args.epoch}")
    local = f", {len(columns) - 3} local views of {columns[3].shape[1]} px" if len(columns) > 3 else ""
    print(f"wrote {args.out} ({len(columns[0])} images, views of {args.image_size} px{local})")


if __name__ == "__main__":
    main()
