"""Shared by the trainer tests: small digits .beton files (written once per test process) and a way to
call the training CLI in-process or as a subprocess."""
from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=None)
def digits_betons(root: str, n_train: int = 256, n_val: int = 120) -> tuple[str, str]:
    """(train, val) .beton paths of a digits subset (first n images of each split) under root."""
    from ffcv_amcl.data.digits import load_digits
    from ffcv_amcl.data.write import ArrayDataset, write_beton

    out = []
    for split, n in (("train", n_train), ("test", n_val)):
        path = Path(root) / f"digits_{split}_{n}.beton"
        if not path.exists():
            x, y = load_digits(split)
            write_beton(path, ArrayDataset(x[:n], y[:n]), num_workers=1,
                        meta={"dataset": "digits", "split": split, "num_classes": 10})
        out.append(str(path))
    return tuple(out)


def tiny_args(train: str, folder, *extra: str, val: str = "") -> list[str]:
    """A few fast steps: ResNet-18 with the ImageNet stem at 32 px, batch 32, one loader thread."""
    return [f"--data.train_dataset={train}", f"--data.val_dataset={val}", "--data.num_workers=1",
            "--model.stem=imagenet", "--training.batch_size=32", "--training.lr=0.05",
            "--training.device=cpu", "--training.precision=fp32", "--data.augs=acd", "--data.crop_scale=0.3,1",
            f"--logging.folder={folder}", "--eval.knn_every=0", *extra]


def run_cli(module: str, *args: str, timeout: int = 300, env_extra: dict | None = None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    env.pop("FFCV_AMCL_DEBUG", None)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
