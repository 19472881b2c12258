"""Export: the backbone alone, loadable (strict) into a fresh torchvision ResNet built as the JSON says."""
import json
import math

import pytest
import torch
from torchvision import models

from ffcv_amcl.checkpoint import save_checkpoint
from ffcv_amcl.config import parse_config, to_flat
from ffcv_amcl.export import export_backbone, main
from ffcv_amcl.model.ssl import build_model


def make_checkpoint(folder, arch, stem, image_size):
    """A checkpoint of an untrained model whose BN statistics were moved off their defaults (so eval mode
    exercises them); the dict has the keys restore_model needs."""
    cfg, _ = parse_config(["--data.train_dataset=x.beton", f"--model.arch={arch}", f"--model.stem={stem}",
                           f"--data.image_size={image_size}", "--training.batch_size=4"],
                          check_files=False, world_size=1)
    torch.manual_seed(0)
    model = build_model(cfg, device="cpu")
    with torch.no_grad():
        model.backbone.train()(torch.randn(4, 3, image_size, image_size))
    records = [{"epoch": 1, "step": 3, "knn_top1": 30.0}, {"epoch": 2, "step": 7, "knn_top1": 41.5,
                                                           "online_linear_top1": 50.25}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + "{cut by a cr")
    state = {"model": model.state_dict(), "config": to_flat(cfg), "epoch": 2, "step": 7, "world_size": 1}
    return save_checkpoint(folder, state), model.backbone.eval()


@pytest.mark.parametrize("arch,stem,size", [("resnet18", "cifar", 32), ("resnet18", "imagenet", 64),
                                            ("resnet50", "cifar", 16), ("resnet50", "imagenet", 32)])
def test_export_loads_strictly_and_gives_the_same_features(tmp_path, arch, stem, size):
    ckpt, backbone = make_checkpoint(tmp_path, arch, stem, size)
    out = tmp_path / "backbone.pt"
    info = export_backbone(ckpt, out)
    assert json.loads((tmp_path / "backbone.json").read_text()) == info
    assert (info["arch"], info["stem"], info["epoch"], info["step"]) == (arch, stem, 2, 7)
    assert info["knn_top1"] == 41.5 and info["online_linear_top1"] == 50.25
    assert info["feature_dim"] == {"resnet18": 512, "resnet50": 2048}[arch]
    assert bool(info["differs_from_library"]) == (stem == "cifar")
    if stem == "cifar":                                 # says which layers differ; stock torchvision refuses
        assert info["differs_from_library"][0].startswith("conv1.weight: (64, 3, 3, 3) here")
        stock = models.resnet18()
        stock.fc = torch.nn.Identity()
        with pytest.raises(RuntimeError, match="conv1.weight"):
            stock.load_state_dict(torch.load(out, weights_only=True))
    scope: dict = {}
    exec("\n".join(info["load"]), scope)               # the printed instructions, run as they stand
    m = scope["m"]
    assert not m.training
    # Same memory layout as the trainer's backbone: channels_last vs contiguous changes the CPU convolutions'
    # summation order (about 1e-5 apart), which says nothing about the weights.
    m = m.to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        diff = (m(x) - backbone(x)).abs().max().item()
    assert diff <= 1e-6


def fails_with(capsys, *argv):
    """main's exit code and its stderr, which must be one line."""
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return exc.value.code, err


def test_user_mistakes_are_one_line_and_exit_2(tmp_path, capsys):
    code, err = fails_with(capsys, "--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "b.pt"))
    assert code == 2 and "not found" in err
    # the out folder is checked before the checkpoint is read
    code, err = fails_with(capsys, "--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "no" / "b.pt"))
    assert code == 2 and "does not exist" in err
    code, err = fails_with(capsys, "--out", "b.pt")
    assert code == 2 and "--checkpoint" in err
    assert list(tmp_path.iterdir()) == []


def test_non_finite_weights_are_never_exported(tmp_path, capsys):
    ckpt, _ = make_checkpoint(tmp_path, "resnet18", "cifar", 16)
    state = torch.load(ckpt, weights_only=True)
    state["model"]["backbone.layer1.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, ckpt)
    code, err = fails_with(capsys, "--checkpoint", str(ckpt), "--out", str(tmp_path / "b.pt"))
    assert code == 2 and "holds non-finite weights (1 NaN/inf values, in backbone.layer1.0.conv1.weight (1))" in err
    assert not (tmp_path / "b.pt").exists()


def test_help_works():
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0


# timm's test_vit: a ViT of timm's own tests (4 blocks, 64-d), as cheap on the CPU as the suite needs
@pytest.mark.parametrize("arch,extra", [("timm:test_vit", ["--model.patch_size=4", "--model.stem=auto"]),
                                        ("resnet34", [])])
def test_a_trained_backbone_loads_strictly_into_its_library(tmp_path, arch, extra, capsys):
    """Two epochs on digits (a timm ViT at 32 px with patch 4, a torchvision ResNet-34), then the export: the
    printed lines build the library's model, load the weights strictly and give the trainer's features."""
    from ffcv_amcl.checkpoint import restore_model
    from ffcv_amcl.train import run
    from tests.train_helpers import digits_betons, tiny_args

    train, _ = digits_betons(str(tmp_path), 32, 10)
    out = run(tiny_args(train, tmp_path / "run", f"--model.arch={arch}", *extra, "--model.method=simclr",
                        "--model.amcl=0", "--model.heads=1", "--training.epochs=2", "--training.batch_size=16",
                        "--model.proj_dim=16",
                        "--model.proj_hidden=32"))
    assert len(out["losses"]) == 4 and all(math.isfinite(x) for x in out["losses"])
    with pytest.raises(SystemExit) as exc:
        main(["--checkpoint", str(out["checkpoint"]), "--out", str(tmp_path / "backbone.pt")])
    assert exc.value.code == 0
    printed = capsys.readouterr().out
    info = json.loads((tmp_path / "backbone.json").read_text())
    assert info["library"] == ("timm" if arch.startswith("timm:") else "torchvision")
    assert "\n    ".join(info["load"]) in printed
    scope: dict = {}
    exec("\n".join(info["load"]), scope)
    backbone = restore_model(out["checkpoint"], device="cpu")[0].backbone.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        diff = (scope["m"](x) - backbone(x)).abs().max().item()
    assert diff <= 1e-4
