"""Resuming a run folder under other settings: a setting that shapes the run is refused in one line naming every
difference, unless --training.resume_changed=1, which carries on and records the change; settings that do not
shape the weights never block a resume."""
import json
import shutil

import pytest

from ffcv_amcl.checkpoint import list_checkpoints, load_checkpoint
from ffcv_amcl.errors import UserError
from ffcv_amcl.train import run
from tests.train_helpers import digits_betons, tiny_args

BASE = ["--training.epochs=2", "--training.checkpoint_every=1", "--model.heads=2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("digits"))
    train, val = digits_betons(root, 128, 120)
    other, _ = digits_betons(root, 96, 120)
    return train, val, other


@pytest.fixture(scope="module")
def epoch_one(data, tmp_path_factory):
    """A run stopped after its first epoch (4 steps), checkpointed there."""
    folder = tmp_path_factory.mktemp("epoch_one")
    run(tiny_args(data[0], folder, *BASE, "--training.max_steps=4"))
    return folder


def copy_of(folder, tmp_path):
    dest = tmp_path / "run"
    shutil.copytree(folder, dest)
    return dest


def records(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


CHANGES = [  # (flag, key, value in the checkpoint, value now); the dataset's value is filled in by the test
    ("--training.batch_size=16", "training.batch_size", 32, 16),
    (None, "data.train_dataset", None, None),
    ("--training.seed=1", "training.seed", 0, 1),
    ("--training.lr=0.1", "training.lr", 0.05, 0.1),
    ("--data.augs=ac", "data.augs", "acd", "ac"),
]


@pytest.mark.parametrize("flag,key,old,new", CHANGES, ids=[c[1] for c in CHANGES])
def test_a_changed_setting_refuses_the_resume_in_one_line(data, epoch_one, tmp_path, flag, key, old, new):
    folder = copy_of(epoch_one, tmp_path)
    train = data[0]
    if key == "data.train_dataset":
        train, old, new = data[2], data[0], data[2]
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".lock"}
    with pytest.raises(UserError) as err:
        run(tiny_args(train, folder, *BASE, *([flag] if flag else [])))
    msg = str(err.value)
    assert "\n" not in msg
    assert f"{key}: checkpoint {old!r}, now {new!r}" in msg
    assert "--training.resume_changed=1" in msg and "--training.overwrite=1" in msg
    after = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".lock"}
    assert after == before                                  # nothing trained, config.json untouched


def test_every_difference_is_listed(data, epoch_one, tmp_path):
    folder = copy_of(epoch_one, tmp_path)
    with pytest.raises(UserError) as err:
        run(tiny_args(data[0], folder, *BASE, "--training.lr=0.1", "--training.seed=1", "--training.epochs=3"))
    msg = str(err.value)
    for part in ("training.lr: checkpoint 0.05, now 0.1", "training.seed: checkpoint 0, now 1",
                 "training.epochs: checkpoint 2, now 3"):
        assert part in msg


def test_the_weights_must_fit_even_with_resume_changed(data, epoch_one, tmp_path):
    folder = copy_of(epoch_one, tmp_path)
    with pytest.raises(UserError) as err:
        run(tiny_args(data[0], folder, *BASE, "--model.heads=1", "--training.resume_changed=1"))
    assert "model.heads: checkpoint 2, now 1" in str(err.value)
    assert "resume_changed" not in str(err.value)           # no way to carry these weights into that model


def test_resume_changed_carries_on_and_records_the_change(data, epoch_one, tmp_path, capsys):
    folder = copy_of(epoch_one, tmp_path)
    out = run(tiny_args(data[0], folder, *BASE, "--training.lr=0.1", "--training.resume_changed=1"))
    assert out["step"] == 8 and "resumed from" in capsys.readouterr().out
    recs = records(folder)
    assert [r["epoch"] for r in recs] == [0, 1, 2]
    assert "settings_changed" not in recs[1]
    assert recs[2]["settings_changed"] == {"training.lr": [0.05, 0.1]}
    saved = json.loads((folder / "config.json").read_text())
    assert saved["training.lr"] == 0.1                      # still the flat current config ...
    assert saved["history"] == [{"epoch": 1, "step": 4, "changed": {"training.lr": [0.05, 0.1]}}]   # ... and its past
    state = load_checkpoint(list_checkpoints(folder)[0])
    assert state["config"]["training.lr"] == 0.1 and state["history"] == saved["history"]
    # Resuming again under the new settings needs no flag, and the history stays.
    run(tiny_args(data[0], folder, *BASE, "--training.lr=0.1"))
    assert json.loads((folder / "config.json").read_text())["history"] == saved["history"]


def test_settings_that_do_not_shape_the_weights_never_block(data, epoch_one, tmp_path):
    folder = copy_of(epoch_one, tmp_path)
    out = run(tiny_args(data[0], folder, *BASE, "--data.num_workers=2", "--training.log_every=3",
                        "--training.checkpoint_every=2", "--eval.knn_every=1", "--eval.knn_k=10",
                        "--eval.online_linear=0", "--logging.tensorboard=0", "--dist.backend=gloo", val=data[1]))
    assert out["step"] == 8
    assert json.loads((folder / "config.json").read_text())["history"] == []
