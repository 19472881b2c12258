"""Export a checkpoint's backbone as a plain torchvision ResNet or timm state_dict, for use outside ffcv-amcl.

    python -m ffcv_amcl.export --checkpoint runs/x/ckpt_e0100_s00009700.pt --out backbone.pt

Training checkpoints mix `backbone.`-prefixed weights with heads, temperature nets, queues and optimizer
state; other code wants only the backbone. The output loads with `torch.load(..., weights_only=True)` into
`torchvision.models.<arch>()` with `fc = nn.Identity()`, or into `timm.create_model(<name>, num_classes=0, ...)`
with the keywords the run built it with (a ViT's image and patch size), strictly. The CIFAR stem (3x3 stride-1 conv1, no
max-pool) has the same keys but another conv1 shape: the command prints the one line that builds the
matching model. A JSON beside the output (backbone.json for backbone.pt) records what the weights are
(arch, stem, method, AMCL, epoch, kNN and online-linear top-1 of that epoch) and the lines that load them.
"""
from __future__ import annotations

import json
from pathlib import Path

from torch import nn
from torchvision import models

from ffcv_amcl.atomic import atomic_path
from ffcv_amcl.checkpoint import load_checkpoint, restore_model, save_torch, saved_settings
from ffcv_amcl.compatibility import check_compatible
from ffcv_amcl.errors import ArgumentParser, check, cli
from ffcv_amcl.model.backbone import resolve_stem, timm_kwargs, timm_name
from ffcv_amcl.monitoring.metrics import read_metrics
from ffcv_amcl.monitoring.names import KNN_TOP1, ONLINE_LINEAR_TOP1, STEP
from ffcv_amcl.run_folder import CONFIG_FILE, read_config

METRIC_KEYS = (KNN_TOP1, ONLINE_LINEAR_TOP1)
CIFAR_STEM = "m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False); m.maxpool = nn.Identity(); "


def timm_options(cfg) -> dict:
    """create_model keywords of a timm backbone beyond num_classes=0 ({} for torchvision)."""
    name = timm_name(cfg.model.arch)
    return {} if name is None else timm_kwargs(name, cfg.data.image_size, cfg.model.patch_size)


def build_line(arch: str, stem: str, options: dict) -> str:
    """The one line that builds a torchvision or timm model the exported state_dict fits (strict)."""
    name = timm_name(arch)
    if name is not None:
        keywords = "".join(f", {k}={v!r}" for k, v in options.items())
        return f"m = timm.create_model({name!r}, num_classes=0{keywords})"
    return f"m = torchvision.models.{arch}(); " + (CIFAR_STEM if stem == "cifar" else "") + "m.fc = nn.Identity()"


def load_lines(arch: str, stem: str, path: str, options: dict) -> list[str]:
    """Runnable Python that loads the export into a fresh model `m`."""
    imports = ["import torch, timm"] if timm_name(arch) else ["import torch, torchvision", "from torch import nn"]
    return [*imports, build_line(arch, stem, options),
            f"m.load_state_dict(torch.load({path!r}, weights_only=True)); m.eval()"]


def stock_model(arch: str, options: dict) -> nn.Module:
    """The library's own headless model of `arch` (torchvision with fc = Identity, timm with num_classes=0)."""
    name = timm_name(arch)
    if name is not None:
        import timm

        return timm.create_model(name, num_classes=0, **options)
    stock = getattr(models, arch)(weights=None)
    stock.fc = nn.Identity()
    return stock


def library_differences(arch: str, weights: dict, stem: str, options: dict) -> list[str]:
    """How the export departs from the library's stock `arch`: shapes, then modules.

    Keys must match exactly (else the export would not load strictly whatever the user builds), so a
    missing or extra key is a bug here, not a user error."""
    library = "timm" if timm_name(arch) else "torchvision"
    ref = stock_model(arch, options).state_dict()
    if set(ref) != set(weights):
        raise RuntimeError(f"export keys differ from {library} {arch}: {sorted(set(ref) ^ set(weights))[:4]}")
    diffs = [f"{k}: {tuple(v.shape)} here, {tuple(ref[k].shape)} in {library}"
             for k, v in weights.items() if v.shape != ref[k].shape]
    if stem == "cifar":
        diffs.append("maxpool: nn.Identity() here, MaxPool2d(3, 2, 1) in torchvision")
    return diffs


def epoch_metrics(run: Path, step: int) -> dict:
    """kNN / online-linear top-1 of the checkpoint's epoch from run/metrics.jsonl (None when absent).

    A record matches by step (mid-epoch checkpoints log as the next epoch); the last match wins, as a
    resumed run rewrites its records."""
    match = ([r for r in read_metrics(run) if r.get(STEP) == step] or [{}])[-1]
    return {k: match.get(k) for k in METRIC_KEYS}


def describe(cfg, model, state: dict, checkpoint: Path, out: Path, stem: str, diffs: list[str]) -> dict:
    """The sidecar JSON: what the weights are, where they came from, how to load them."""
    options = timm_options(cfg)
    return {"arch": cfg.model.arch, "library": "timm" if timm_name(cfg.model.arch) else "torchvision",
            "stem": stem, "image_size": cfg.data.image_size,
            "feature_dim": model.feature_dim, "method": cfg.model.method, "amcl": bool(cfg.model.amcl),
            "heads": cfg.model.heads, "epoch": int(state["epoch"]), "step": int(state["step"]),
            **epoch_metrics(checkpoint.parent, int(state["step"])),
            "checkpoint": str(checkpoint.resolve()), "backbone": out.name,
            "differs_from_library": diffs, "build": build_line(cfg.model.arch, stem, options),
            "load": load_lines(cfg.model.arch, stem, str(out), options)}


def export_backbone(checkpoint: str | Path, out: str | Path) -> dict:
    """Write the checkpoint's backbone to `out` and its description beside it (both atomically)."""
    checkpoint, out = Path(checkpoint), Path(out)
    sidecar = out.with_suffix(".json")
    check(out.parent.is_dir(), f"--out folder {out.parent} does not exist: create it or pick another --out")
    check(not out.is_dir(), f"--out {out} is a folder: give a file name such as {out / 'backbone.pt'}")
    check(sidecar != out, f"--out {out} ends in .json, the description's name: use e.g. {out.with_suffix('.pt')}")
    state = load_checkpoint(checkpoint)
    folder_settings = read_config(checkpoint.parent)
    if folder_settings is not None:      # its metrics describe these weights only if the folder is their run's
        check_compatible(saved_settings(state), folder_settings, source=f"checkpoint {checkpoint}",
                         fix=f"{checkpoint.parent / CONFIG_FILE} belongs to another run; move the checkpoint to "
                             f"its own run folder")
    model, cfg, state = restore_model(checkpoint, device="cpu", state=state)
    weights = {k: v.detach().contiguous() for k, v in model.backbone.state_dict().items()}
    stem = "timm" if timm_name(cfg.model.arch) else resolve_stem(cfg.model.stem, cfg.data.image_size)
    diffs = library_differences(cfg.model.arch, weights, stem, timm_options(cfg))
    info = describe(cfg, model, state, checkpoint, out, stem, diffs)
    text = json.dumps(info, indent=2) + "\n"
    save_torch(weights, out)
    with atomic_path(sidecar) as tmp:
        tmp.write_text(text)
    return info


@cli
def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="ffcv-amcl-export", description=__doc__.split("\n\n")[0],
                 epilog="writes OUT (the state_dict) and OUT with .json (what it is, how to load it)")
    ap.add_argument("--checkpoint", required=True, help="training checkpoint, RUN/ckpt_eXXXX_sXXXXXXXX.pt")
    ap.add_argument("--out", required=True, help="file for the backbone state_dict, e.g. backbone.pt")
    a = ap.parse_args(argv)
    info = export_backbone(a.checkpoint, a.out)
    sidecar = Path(a.out).with_suffix(".json")
    print(f"wrote {a.out} ({info['arch']}, {info['stem']} stem, {info['feature_dim']}-d features, "
          f"epoch {info['epoch']}) and {sidecar}", flush=True)
    for d in info["differs_from_library"]:
        print(f"differs from {info['library']} {info['arch']}: {d}", flush=True)
    print("load it with:\n    " + "\n    ".join(info["load"]), flush=True)
    return 0


if __name__ == "__main__":
    main()
