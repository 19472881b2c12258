"""Evaluate a checkpoint's backbone: kNN (k=200, t=0.1) and a linear probe on frozen features.

    python -m ffcv_amcl.eval --checkpoint runs/x/ckpt_e0100_s00009700.pt \
        --data.train_dataset=c10_train.beton --data.val_dataset=c10_test.beton [--eval.linear_epochs=100]

Both classifiers train on data.eval_train_dataset when it is set (a labelled set beside an unlabelled
pretraining set), on data.train_dataset otherwise.

The model settings come from the checkpoint; a model.* setting given here that disagrees with it is an
error (one line), not a silent override. Features of both splits are computed once (no augmentation),
then the linear layer trains on them: 100 epochs take seconds. Prints one line per metric and, with
--output, writes them as JSON.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ffcv_amcl import distributed as dist
from ffcv_amcl import machine
from ffcv_amcl.atomic import atomic_path
from ffcv_amcl.checkpoint import load_checkpoint, restore_model, saved_settings
from ffcv_amcl.compatibility import check_compatible
from ffcv_amcl.config import beton_samples, parse_argv
from ffcv_amcl.data.labels import require_labelled
from ffcv_amcl.errors import UserError, check, check_output_file, cli
from ffcv_amcl.evaluation import extract_features, knn_top1, linear_probe


def evaluate(checkpoint: str, argv: list[str], state: dict | None = None) -> dict:
    """kNN and linear-probe top-1 (percent) of the checkpoint's backbone on the given splits."""
    state = state if state is not None else load_checkpoint(checkpoint)
    values, explicit = parse_argv(argv, prog="ffcv-amcl-eval")
    check_compatible(saved_settings(state), {key: values[key] for key in explicit}, source=f"checkpoint {checkpoint}",
                     fix="drop the flag or pick the matching checkpoint")
    d = values
    train_key = "data.eval_train_dataset" if d["data.eval_train_dataset"] else "data.train_dataset"
    train_path, val_path = d[train_key], d["data.val_dataset"]
    check(bool(val_path), "data.val_dataset is empty: pass --data.val_dataset=path/to/test.beton")
    beton_samples(train_path, train_key)
    beton_samples(val_path, "data.val_dataset")
    require_labelled(train_path, train_key, "kNN and the linear probe train on labels; pass "
                                            "--data.eval_train_dataset=a labelled .beton")
    require_labelled(val_path, "data.val_dataset", "kNN and the linear probe score labels; pass "
                                                   "--data.val_dataset=a labelled .beton")

    info = dist.DistInfo(device=dist.pick_device(d["training.device"]))
    machine.set_torch_threads(d["training.threads"])
    model, cfg, _ = restore_model(checkpoint, device=info.device, state=state)

    from ffcv_amcl.data.loader import make_eval_loader
    size = d["eval.image_size"] or cfg.data.image_size
    loaders = [make_eval_loader(p, d["eval.batch_size"], image_size=size, num_workers=d["data.num_workers"],
                                device=info.device) for p in (train_path, val_path)]
    amp = torch.bfloat16 if info.device.type == "cuda" and d["training.precision"] != "fp32" else None
    (f_tr, y_tr), (f_va, y_va) = (extract_features(model.features, L, device=info.device, autocast_dtype=amp)
                                  for L in loaders)
    result = {"checkpoint": str(checkpoint), "epoch": int(state["epoch"]), "train_images": len(y_tr),
              "val_images": len(y_va)}
    result["knn_top1"] = knn_top1(f_tr, y_tr, f_va, y_va, k=d["eval.knn_k"], t=d["eval.knn_t"])
    print(f"knn_top1: {result['knn_top1']:.2f}% (k={d['eval.knn_k']}, t={d['eval.knn_t']})", flush=True)
    if d["eval.linear_epochs"] > 0:
        probe = linear_probe(f_tr, y_tr, f_va, y_va, epochs=d["eval.linear_epochs"], lr=d["eval.linear_lr"],
                             batch_size=d["eval.linear_batch_size"], weight_decay=d["eval.linear_wd"],
                             seed=d["training.seed"])
        result["linear_top1"] = probe["test_top1"]
        result["linear_train_top1"] = probe["train_top1"]
        print(f"linear_top1: {result['linear_top1']:.2f}% ({d['eval.linear_epochs']} epochs on frozen features)",
              flush=True)
    return result


@cli
def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--checkpoint")
    pre.add_argument("--output")
    known, rest = pre.parse_known_args(sys.argv[1:] if argv is None else argv)
    if not known.checkpoint:
        if "-h" in rest or "--help" in rest:
            print(__doc__)
            return 0
        raise UserError("--checkpoint is required: pass --checkpoint=path/to/ckpt_eXXXX_sXXXXXXXX.pt")
    if known.output:  # before the evaluation, not after it
        check_output_file(known.output, "--output")
    # data.train_dataset is required by the shared settings; the checkpoint's own paths are the fallback.
    state = load_checkpoint(known.checkpoint)
    result = evaluate(known.checkpoint, _with_fallback_paths(state, rest), state)
    if known.output:
        with atomic_path(Path(known.output)) as tmp:
            tmp.write_text(json.dumps(result, indent=2))
    return 0


def _with_fallback_paths(state: dict, argv: list[str]) -> list[str]:
    """Use the checkpoint's .beton paths (training, kNN training split, validation) when none are given; a
    training set given here replaces the checkpoint's training split too."""
    given = {a.split("=")[0] for a in argv}
    if "--data.train_dataset" in given:
        given.add("--data.eval_train_dataset")
    out = list(argv)
    for key in ("data.train_dataset", "data.eval_train_dataset", "data.val_dataset"):
        if f"--{key}" not in given and state["config"].get(key):
            out.append(f"--{key}={state['config'][key]}")
    return out


if __name__ == "__main__":
    main()
