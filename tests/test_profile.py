"""The profiler on the digits quickstart config: every stage measures something real; bad input fails cleanly."""
import json
import math
import os
import subprocess
import sys

import pytest
from tests.train_helpers import REPO, digits_betons

QUICKSTART = REPO / "rn_configs" / "digits_quickstart.yaml"
NUMBERS = ("loader_pairs_per_s", "model_pairs_per_s", "loss_ms", "step_pairs_per_s", "data_wait_share")


@pytest.fixture(scope="module")
def beton(tmp_path_factory):
    return digits_betons(str(tmp_path_factory.mktemp("profile_data")), 96, 48)[0]


def tiny(beton, folder, *extra):
    """The quickstart config shrunk: batch 16, one loader thread, 2 measured steps per stage."""
    return ["--config-file", str(QUICKSTART), f"--data.train_dataset={beton}", "--data.val_dataset=",
            "--data.num_workers=1", "--training.batch_size=16", f"--logging.folder={folder}/run",
            "--profile.steps=2", "--profile.warmup=1", *extra]


@pytest.fixture(scope="module")
def profiled(beton, tmp_path_factory):
    pytest.importorskip("yaml")  # the quickstart config is YAML
    from ffcv_amcl.profile import profile

    folder = tmp_path_factory.mktemp("profile_run")
    out = folder / "profile.json"
    result = profile(tiny(beton, folder, f"--profile.json={out}"))
    return result, json.loads(out.read_text())


def test_json_holds_every_figure(profiled):
    result, saved = profiled
    assert {"loader_pairs_per_s", "model_pairs_per_s", "loss_ms", "step_pairs_per_s", "bottleneck", "device",
            "threads", "batch_size", "precision", "data_wait_share"} <= set(saved)
    for key in NUMBERS[:4]:
        assert isinstance(saved[key], float) and math.isfinite(saved[key]) and saved[key] > 0, key
    assert 0 <= saved["data_wait_share"] <= 1
    assert saved["threads"] >= 1 and saved["batch_size"] == 16
    # quickstart settings came through: CPU, fp32, SimCLR-AMCL with 3 heads
    assert (saved["device"], saved["precision"], saved["method"], saved["amcl"], saved["heads"]) == (
        "cpu", "fp32", "simclr", True, 3)
    assert saved["machine"]["cores"] >= 1 and saved["peak_rss_mib"] > 0
    assert saved == json.loads(json.dumps(result))


def test_verdict_names_the_slower_stage(profiled):
    _, saved = profiled
    slower = "loader" if saved["loader_pairs_per_s"] < saved["model_pairs_per_s"] else "model"
    assert saved["bottleneck"] == slower


def test_loss_stage_runs_the_configured_loss():
    """The loss stage feeds synthetic projections through the model's own forward: the value equals the loss
    module called directly on the same projections (AMCL, and the classic NT-Xent)."""
    import torch

    from ffcv_amcl.config import parse_config
    from ffcv_amcl.losses.ntxent import nt_xent
    from ffcv_amcl.model.ssl import build_model
    from ffcv_amcl.profile import projections_only

    for amcl in (1, 0):
        cfg, _ = parse_config(["--data.train_dataset=x.beton", "--model.stem=imagenet", f"--model.amcl={amcl}",
                               "--model.heads=2", "--model.proj_dim=16", "--training.batch_size=8"],
                              check_files=False)
        torch.manual_seed(0)
        model = build_model(cfg, device="cpu")
        bank = torch.randn(2, 16, 16, requires_grad=True)
        with projections_only(model, bank):
            loss = model(torch.empty(8, 1), torch.empty(8, 1)).loss
        expected = (model.criterion(bank[:, :8], bank[:, 8:]) if amcl
                    else nt_xent(bank[:, :8], bank[:, 8:], cfg.loss.temperature))
        assert torch.allclose(loss, expected)
        loss.backward()
        assert bank.grad is not None and bank.grad.abs().sum() > 0
        assert "encoders" not in vars(model)                    # the shadow is removed afterwards
        assert model(torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32))[0].shape == ()


@pytest.mark.parametrize("extra", [
    ["--model.method=moco", "--model.amcl=1"], ["--model.method=moco", "--model.amcl=0", "--loss.mochi_n_hard=8"],
    ["--model.method=moco", "--model.amcl=0", "--loss.ascl=1"], ["--model.method=simsiam", "--model.amcl=1"],
    ["--model.method=byol", "--model.amcl=0"], ["--model.method=barlow_twins", "--model.amcl=1"],
], ids=["moco-amcl", "mochi", "ascl", "simsiam-amcl", "byol", "barlow-amcl"])
def test_loss_stage_isolates_every_method(extra):
    """Every method's loss runs from the synthetic projections alone: finite, with a gradient on them, and
    it does not touch the backbone."""
    import torch

    from ffcv_amcl.config import parse_config
    from ffcv_amcl.model.ssl import build_model
    from ffcv_amcl.profile import projections_only

    cfg, _ = parse_config(["--data.train_dataset=x.beton", "--model.stem=imagenet", "--model.heads=2",
                           "--model.proj_dim=16", "--model.proj_hidden=32", "--model.pred_hidden=8",
                           "--loss.queue_size=64", "--training.batch_size=8", *extra], check_files=False)
    model = build_model(cfg, device="cpu")
    children = dict(model.named_children())
    bank = torch.randn(2, 16, 16, requires_grad=True)
    with projections_only(model, bank):
        loss = model(torch.empty(8, 1), torch.empty(8, 1)).loss
    loss.backward()
    assert torch.isfinite(loss) and bank.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.backbone.parameters())
    assert dict(model.named_children()) == children and "encoders" not in vars(model)   # all restored
    assert all(p.grad is None for p in getattr(model, "predictor", torch.nn.Identity()).parameters())


def run_cli(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("FFCV_AMCL_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "ffcv_amcl.profile", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_checkpoint_that_does_not_match_the_config_fails_in_one_line(beton, tmp_path):
    import torch

    from ffcv_amcl.checkpoint import save_checkpoint

    ckpt = save_checkpoint(tmp_path, {"epoch": 1, "step": 6, "model": {"w": torch.zeros(1)},
                                      "config": {"model.heads": 5, "model.method": "simclr"}})
    out = tmp_path / "p.json"
    proc = run_cli(f"--data.train_dataset={beton}", "--model.heads=3", "--training.device=cpu",
                   f"--training.resume={ckpt}", f"--profile.json={out}", "--training.batch_size=16")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: checkpoint") and "model.heads" in lines[0]
    assert not out.exists()


def test_unknown_profile_setting_fails_in_one_line(beton):
    proc = run_cli(f"--data.train_dataset={beton}", "--profile.stepz=3")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1 and "profile.stepz" in lines[0], proc.stderr
