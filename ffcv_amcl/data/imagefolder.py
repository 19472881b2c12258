"""Image folders: `root/<split>/<class>/<image>.jpg|png`, label = index of the sorted class name, or (unlabelled,
labels=False) any tree of images under `root/<split>`, nested or flat, each with the label UNLABELLED.

As torchvision's ImageFolder: names starting with '.' (`.ipynb_checkpoints`, `._x.jpg`) are skipped, and a
class folder with no image is an error (it would take a label and shift every class after it)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ffcv_amcl.data.labels import UNLABELLED
from ffcv_amcl.data.pixels import to_rgb8
from ffcv_amcl.errors import UserError, check

EXTENSIONS = (".jpg", ".jpeg", ".png")


def _is_image(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in EXTENSIONS


def split_folder(root: str | Path, split: str) -> Path:
    """root/split, or one line naming what to set when either is missing."""
    root = Path(root)
    check(root.is_dir(), f"image folder {root} does not exist: point cfg.data_dir at the folder that "
                         f"holds the split sub-folders (e.g. train/ and val/)")
    folder = root / split
    if not folder.is_dir():
        have = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise UserError(f"no split folder {folder}: set cfg.split to a sub-folder of {root} "
                        f"({', '.join(have) if have else 'it has none'}), or to . for {root} itself")
    return folder


def class_tree(folder: Path) -> tuple[list[str], list[Path], list[int]]:
    """(classes, files, labels) of folder/<class>/<image>, classes and files sorted."""
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    check(classes, f"{folder} has no class sub-folders: expected {folder}/<class>/<image>.jpg (or convert it "
                   f"without labels: --cfg.labels=none)")
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        found = sorted(p for p in (folder / name).iterdir() if _is_image(p.name))
        check(found, f"class folder {folder / name} holds no .jpg/.jpeg/.png image: add images or remove "
                     f"the folder")
        files += found
        labels += [label] * len(found)
    return classes, files, labels


def any_tree(folder: Path) -> list[Path]:
    """Every image under folder, at any depth, in sorted path order; hidden files and folders are skipped
    (symlinked folders are not followed)."""
    files = []
    for here, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        files += [Path(here) / n for n in names if _is_image(n)]
    check(files, f"{folder} holds no .jpg/.jpeg/.png image at any depth: point cfg.data_dir and cfg.split at "
                 f"the images")
    return sorted(files, key=lambda p: p.relative_to(folder).parts)


class ImageFolder:
    """Indexable of (uint8 HWC RGB array, label); decodes on access, so writer processes share the work.

    labelled=False: every image under the split folder, label UNLABELLED, `classes` None.
    `max_resolution` lets JPEG decode at a reduced scale (PIL's draft mode) when the image is at
    least twice too large; the exact shrink of the longer side is RGBImageField's (cv2 INTER_AREA).
    """

    def __init__(self, root: str | Path, split: str, max_resolution: int | None = None, labelled: bool = True):
        folder = split_folder(root, split)
        if labelled:
            self.classes, self.files, labels = class_tree(folder)
        else:
            self.classes, self.files = None, any_tree(folder)
            labels = [UNLABELLED] * len(self.files)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.max_resolution = max_resolution

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        from PIL import Image

        path = self.files[i]
        try:
            with Image.open(path) as im:
                if self.max_resolution and im.format == "JPEG":
                    im.draft("RGB", (self.max_resolution, self.max_resolution))
                image = to_rgb8(im, path)
        except UserError:
            raise
        except Exception as exc:  # PIL raises OSError, ValueError, SyntaxError... for damaged files
            raise UserError(f"cannot read image {path} ({type(exc).__name__}: {exc}): "
                            f"replace or delete the file") from None
        return image, int(self.labels[i])
