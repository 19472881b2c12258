"""What the trainer reports each epoch beside the loss: the online linear probe (which never touches the
backbone) and AMCL's temperature health, with its warning when temperatures sit at a bound."""
import json

import pytest
import torch

from ffcv_amcl.checkpoint import load_checkpoint
from ffcv_amcl.train import run
from tests.train_helpers import digits_betons, tiny_args

ARGS = ["--training.epochs=2", "--model.heads=2", "--eval.knn_every=1", "--loss.amcl_form=hetero"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return digits_betons(str(tmp_path_factory.mktemp("digits")), 128, 120)


@pytest.fixture(scope="module")
def with_probe(data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("probe_on")
    return folder, run(tiny_args(data[0], folder, *ARGS, "--eval.online_linear=1", val=data[1]))


def test_online_probe_reports_every_epoch(with_probe):
    folder, out = with_probe
    rec = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert "online_linear_top1" not in rec[0]                          # the untrained probe says nothing
    assert all(0 <= r["online_linear_top1"] <= 100 for r in rec[1:])
    state = load_checkpoint(out["checkpoint"])
    assert state["probe"]["linear"]["weight"].shape == (10, 512) and state["probe"]["linear"]["weight"].abs().sum() > 0


def test_online_probe_never_changes_the_backbone(data, with_probe, tmp_path):
    _, on = with_probe
    off = run(tiny_args(data[0], tmp_path, *ARGS, "--eval.online_linear=0", val=data[1]))
    a, b = load_checkpoint(on["checkpoint"])["model"], load_checkpoint(off["checkpoint"])["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert "probe" not in load_checkpoint(off["checkpoint"])
    assert on["losses"] == off["losses"]


def test_temperature_health_is_recorded_per_head(with_probe):
    folder, _ = with_probe
    last = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()][-1]
    for c in range(2):
        for kind in ("pos", "neg"):
            p10, p50, p90 = (last[f"tau_{kind}_p{q}_head{c}"] for q in (10, 50, 90))
            assert 0.02 <= p10 <= p50 <= p90 <= 2.0
            assert 0 <= last[f"tau_{kind}_at_min_head{c}"] <= 1 and 0 <= last[f"tau_{kind}_at_max_head{c}"] <= 1
        assert -1 <= last[f"rank_corr_s_tau_head{c}"] <= 1


def test_temperatures_at_a_bound_give_one_warning_line(data, tmp_path, capsys):
    run(tiny_args(data[0], tmp_path, "--training.max_steps=2", "--loss.amcl_form=ref", "--loss.tau_min=0.5",
                  "--loss.tau_max=0.5001"))
    err = [line for line in capsys.readouterr().err.splitlines() if "sit at a bound" in line]
    assert len(err) == 1 and err[0].startswith("warning: epoch 1: 100% of the positive-pair temperatures")
    assert "--loss.amcl_form" in err[0]


def test_a_collapsed_run_warns_once_naming_the_settings(data, tmp_path, capsys):
    """Weight decay far too strong (and no momentum to smooth it) drives every weight to zero in a few steps: the
    features of every image become the same, and the kNN epoch's collapse monitors say so; the untrained network's
    record (epoch 0) does not."""
    out = run(tiny_args(data[0], tmp_path, "--training.epochs=1", "--eval.knn_every=1", "--model.amcl=0",
                        "--model.heads=1", "--training.weight_decay=19", "--training.momentum=0",
                        "--eval.online_linear=0", val=data[1]))
    err = [line for line in capsys.readouterr().err.splitlines() if "collapsed" in line]
    assert len(err) == 1 and err[0].startswith("warning: epoch 1: the representation has collapsed: RankMe 1.00")
    assert "--training.weight_decay" in err[0] and "--training.lr" in err[0]
    first, last = out["records"][0], out["records"][-1]
    assert first["rankme"] > 10 and last["rankme"] < 1.01 and last["proj_std"] < 1e-6


def test_the_probe_draws_nothing_from_the_global_random_stream():
    from ffcv_amcl.evaluation.online import OnlineProbe

    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    probe = OnlineProbe(512, 10, lr=0.1, total_steps=10, device=torch.device("cpu"))
    assert torch.equal(torch.rand(4), expected) and probe.linear.weight.abs().sum() == 0
