"""ImageNet-style folders: `root/<split>/<class>/<image>.jpg|png`, label = index of the sorted class name.

As torchvision's ImageFolder: names starting with '.' (`.ipynb_checkpoints`, `._x.jpg`) are skipped, and a
class folder with no image is an error (it would take a label and shift every class after it)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ffcv_amcl.data.pixels import to_rgb8
from ffcv_amcl.errors import UserError, check

EXTENSIONS = (".jpg", ".jpeg", ".png")


class ImageFolder:
    """Indexable of (uint8 HWC RGB array, label); decodes on access, so writer processes share the work.

    `max_resolution` lets JPEG decode at a reduced scale (PIL's draft mode) when the image is at
    least twice too large; the exact shrink of the longer side is RGBImageField's (cv2 INTER_AREA).
    """

    def __init__(self, root: str | Path, split: str, max_resolution: int | None = None):
        root = Path(root)
        check(root.is_dir(), f"image folder {root} does not exist: point cfg.data_dir at the folder that "
                             f"holds the split sub-folders (e.g. train/ and val/)")
        folder = root / split
        if not folder.is_dir():
            have = sorted(p.name for p in root.iterdir() if p.is_dir())
            raise UserError(f"no split folder {folder}: set cfg.split to a sub-folder of {root} "
                            f"({', '.join(have) if have else 'it has none'})")
        self.classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        check(self.classes, f"{folder} has no class sub-folders: expected {folder}/<class>/<image>.jpg")
        self.files: list[Path] = []
        labels = []
        for label, name in enumerate(self.classes):
            found = sorted(p for p in (folder / name).iterdir()
                           if p.suffix.lower() in EXTENSIONS and not p.name.startswith("."))
            check(found, f"class folder {folder / name} holds no .jpg/.jpeg/.png image: add images or remove "
                         f"the folder")
            self.files += found
            labels += [label] * len(found)
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
