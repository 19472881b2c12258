"""The logging sinks: with --logging.wandb=1 and WANDB_MODE=offline a training writes a wandb run (in the run
folder) holding every metrics.jsonl field of every epoch and the run's flat config, and a resumed training
continues the same wandb run; without the package the flag fails in one line; off, wandb is never imported."""
import subprocess
import sys

import pytest

from ffcv_amcl.errors import UserError
from ffcv_amcl.monitoring.metrics import read_metrics
from ffcv_amcl.train import run
from tests.monitoring.wandb_store import history, run_id_and_config
from tests.train_helpers import REPO, digits_betons, tiny_args

ARGS = ["--training.epochs=2", "--model.heads=2", "--eval.knn_every=1", "--eval.online_linear=1",
        "--training.checkpoint_every=1", "--logging.wandb=1", "--logging.wandb_project=tests",
        "--logging.wandb_group=sinks"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return digits_betons(str(tmp_path_factory.mktemp("digits")), 128, 120)


@pytest.fixture
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_DIR", raising=False)           # the default: the run folder
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))


def test_an_offline_wandb_run_holds_every_metrics_field(data, tmp_path, offline):
    folder = tmp_path / "run"
    first = run(tiny_args(data[0], folder, *ARGS, "--training.max_steps=4", val=data[1]))     # epoch 1 of 2
    run_id = (folder / "wandb_id").read_text().strip()
    second = run(tiny_args(data[0], folder, *ARGS, val=data[1]))                               # resumes: epoch 2
    assert first["epoch"] == 1 and second["epoch"] == 2
    dirs = sorted((folder / "wandb").glob("offline-run-*"))
    assert len(dirs) == 2 and all(d.name.endswith(f"-{run_id}") for d in dirs)   # one wandb run, resumed once
    stores = [next(d.glob("run-*.wandb")) for d in dirs]
    logged: dict[int, dict] = {}
    for store in stores:
        assert run_id_and_config(store)[0] == run_id
        for step, row in history(store).items():
            logged.setdefault(step, {}).update(row)
    records = read_metrics(folder)
    assert [r["epoch"] for r in records] == [0, 1, 2]
    assert {"knn_top1", "online_linear_top1", "tau_pos_head1", "tau_neg_p50_head1", "rank_corr_s_tau_head0"} <= set(
        records[-1])
    assert sorted(logged) == [0, 1, 2]                                          # step = epoch
    for record in records:
        row = logged[record["epoch"]]
        assert set(row) == set(record), record["epoch"]
        for key, value in record.items():
            assert row[key] == (value if value is None else pytest.approx(value, rel=1e-12)), (record["epoch"], key)
    _, config = run_id_and_config(stores[-1])
    flat = {k: v for k, v in config.items() if "." in k}
    assert flat["model.heads"] == 2 and flat["logging.wandb_group"] == "sinks" and flat["training.epochs"] == 2
    from ffcv_amcl.config import SPEC
    assert set(flat) == {f"{s}.{n}" for s, (_, ps) in SPEC.items() for n in ps}  # the whole flat config


def test_without_the_package_the_flag_fails_in_one_line(data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)                          # import wandb raises ImportError
    with pytest.raises(UserError) as err:
        run(tiny_args(data[0], tmp_path / "run", "--logging.wandb=1"))
    assert str(err.value).startswith("logging.wandb=1 needs the wandb package: pip install wandb")
    assert not (tmp_path / "run").exists()                                  # refused before any work


def test_a_wandb_that_cannot_start_is_one_line_before_the_run_is_recorded(data, tmp_path, offline, monkeypatch):
    import wandb

    def no_login(**kwargs):
        raise wandb.errors.UsageError("No API key configured. Use `wandb login` to log in.")

    monkeypatch.setattr(wandb, "init", no_login)
    with pytest.raises(UserError) as err:
        run(tiny_args(data[0], tmp_path, "--logging.wandb=1", "--training.max_steps=1"))
    assert str(err.value) == ("wandb could not start (No API key configured. Use `wandb login` to log in.): run "
                              "`wandb login`, set WANDB_MODE=offline, or --logging.wandb=0")
    assert not (tmp_path / "config.json").exists() and not (tmp_path / "wandb_id").exists()


def test_wandb_is_not_imported_when_off():
    code = ("import sys, ffcv_amcl.train, ffcv_amcl.monitoring.sinks, ffcv_amcl.plots, ffcv_amcl.export; "
            "assert 'wandb' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
