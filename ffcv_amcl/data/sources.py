"""Dataset name -> indexable of (image, label) plus the facts the sidecar records."""
from __future__ import annotations

import numpy as np

from ffcv_amcl.errors import UserError, check

DATASETS = ("cifar10", "cifar100", "imagefolder", "digits")
LABELS = ("classes", "none")
SUBSET_SEED = 0


def open_source(name: str, data_dir: str | None, split: str, *, max_resolution: int | None = None,
                subset: int = -1, labels: str = "classes"):
    """Return (dataset, meta) for write_beton; meta has dataset, split, labelled, num_classes, classes.

    `subset` > 0 keeps that many samples chosen at random with a fixed seed (in source order),
    so a subset of a class-sorted ImageFolder still covers its classes. labels="none" (imagefolder): every image
    of any tree under data_dir/split, unlabelled (data/labels.py).
    """
    from ffcv_amcl.data.write import ArrayDataset, Subset

    check(labels in LABELS, f"unknown cfg.labels={labels!r}: use classes (the class sub-folders) or none")
    check(labels == "classes" or name == "imagefolder",
          f"cfg.labels=none converts an image folder without classes (cfg.dataset=imagefolder); {name} comes with "
          f"its labels, which pretraining ignores anyway: drop --cfg.labels")

    if name in ("cifar10", "cifar100"):
        from ffcv_amcl.data.cifar import load_cifar

        check(bool(data_dir), f"{name} needs cfg.data_dir: the folder holding the extracted python-version archive")
        images, labels, classes = load_cifar(name, data_dir, split)
        dataset = ArrayDataset(images, labels)
    elif name == "imagefolder":
        from ffcv_amcl.data.imagefolder import ImageFolder

        check(bool(data_dir), "imagefolder needs cfg.data_dir: the folder holding <split>/<class>/<image> files")
        dataset = ImageFolder(data_dir, split, max_resolution=max_resolution, labelled=labels == "classes")
        classes = dataset.classes
    elif name == "digits":
        from ffcv_amcl.data.digits import CLASSES, load_digits

        images, labels = load_digits(split)
        dataset, classes = ArrayDataset(images, labels), list(CLASSES)
    else:
        raise UserError(f"unknown dataset {name!r}: set cfg.dataset to one of {', '.join(DATASETS)}")
    if subset is not None and 0 < subset < len(dataset):
        keep = np.sort(np.random.default_rng(SUBSET_SEED).choice(len(dataset), subset, replace=False))
        dataset = Subset(dataset, keep)
    labelled = classes is not None
    meta = {"dataset": name, "split": split, "labelled": labelled, "num_classes": len(classes) if labelled else None,
            "classes": classes}
    return dataset, meta
