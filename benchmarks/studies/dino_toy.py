"""Does the DINO method learn at all, apart from any recipe? A toy it must solve: 4 fixed random 16 px patterns,
each view the pattern plus Gaussian noise (sigma 0.5), batch 64, the DINO class as the trainer builds it
(ResNet-18, EMA teacher, centre, teacher sharpening), SGD with momentum 0.9 and weight decay 1e-4.

    python -m benchmarks.studies.dino_toy [--prototypes 64] [--lr 0.0075 0.05] [--steps 300]

Prints, every 50 steps, the loss against ln K (a uniform output scores exactly ln K), how many prototypes the
teacher's argmax uses and how pure they are with respect to the 4 patterns (the share of each pattern's images on
that pattern's most common prototype). DINO's ResNet recipe is SGD at lr 0.03 per 256 images: 0.0075 here.
"""
from __future__ import annotations

import argparse
import math

import torch

from ffcv_amcl.config import parse_config
from ffcv_amcl.errors import UserError, cli
from ffcv_amcl.model.ssl import build_model

BATCH, SIDE, PATTERNS = 64, 16, 4


def model_for(prototypes: int, steps: int):
    flags = ["--data.train_dataset=x", "--model.stem=imagenet", f"--training.batch_size={BATCH}",
             f"--data.image_size={SIDE}", "--model.method=dino", "--model.amcl=0", "--model.heads=1",
             f"--model.proj_dim={prototypes}", "--model.proj_hidden=256", "--model.pred_hidden=64",
             "--loss.momentum=0.99"]
    model = build_model(parse_config(flags, check_files=False, world_size=1)[0])
    model.train()
    model.total_steps, model.epoch = steps, 1          # epoch 1: past the frozen last layer
    return model


def purity(assigned: torch.Tensor, labels: torch.Tensor) -> float:
    return sum(int(torch.bincount(assigned[labels == c]).max()) for c in labels.unique()) / len(labels)


def train(prototypes: int, lr: float, steps: int, seed: int = 0) -> None:
    torch.manual_seed(seed)
    model = model_for(prototypes, steps)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9,
                          weight_decay=1e-4)
    patterns = torch.randn(PATTERNS, 3, SIDE, SIDE)
    print(f"# K = {prototypes}, lr {lr}: ln K = {math.log(prototypes):.4f}")
    for step in range(steps):
        labels = torch.randint(0, PATTERNS, (BATCH,))
        a, b = (patterns[labels] + 0.5 * torch.randn(BATCH, 3, SIDE, SIDE) for _ in range(2))
        model.step = step
        out = model(a.contiguous(memory_format=torch.channels_last), b.contiguous(memory_format=torch.channels_last))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        model.momentum_update()
        if step % 50 == 0 or step == steps - 1:
            with torch.no_grad():
                assigned = model.project(a, target=True)[0].argmax(-1)
            print(f"step {step:4d}  loss {out.loss.item():.4f}  prototypes used {len(assigned.unique()):3d}  "
                  f"purity {purity(assigned, labels):.2f}", flush=True)


@cli
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.studies.dino_toy", description=__doc__.split("\n\n")[0])
    ap.add_argument("--prototypes", type=int, default=64)
    ap.add_argument("--lr", type=float, nargs="+", default=[0.0075, 0.05])
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args(argv)
    if args.prototypes < 2 or args.steps < 1 or min(args.lr) <= 0:
        raise UserError("--prototypes must be at least 2, --steps at least 1 and every --lr positive")
    for lr in args.lr:
        train(args.prototypes, lr, args.steps)
    return 0


if __name__ == "__main__":
    main()
