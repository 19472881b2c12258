"""Checkpoints: atomic writes, safe loading (weights_only), newest-valid selection, config checks."""
import os
import pickle

import pytest
import torch

from ffcv_amcl.checkpoint import (FORMAT, checkpoint_name, find_latest, list_checkpoints, load_checkpoint,
                                  save_checkpoint, saved_settings)
from ffcv_amcl.errors import UserError
from ffcv_amcl.optim import make_optimizer


def trained_state(opt_name="sgd", epoch=1, step=10):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    opt = make_optimizer(model, name=opt_name, lr=0.1, exclude_bn_bias=True)
    model(torch.randn(16, 4)).pow(2).mean().backward()
    opt.step()
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return model, opt, {"model": model.state_dict(), "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
                        "epoch": epoch, "step": step, "batch_in_epoch": 0, "seed": 3,
                        "config": {"model.arch": "resnet18", "data.crop_scale": [0.3, 1.0]},
                        "epoch_stats": {"loss_sum": 1.5, "n": 2, "tau": {"tau_pos": torch.ones(3)}}}


@pytest.mark.parametrize("opt_name", ["sgd", "lars"])
def test_round_trip_with_weights_only(tmp_path, opt_name):
    model, opt, state = trained_state(opt_name)
    path = save_checkpoint(tmp_path, state)
    assert path.name == checkpoint_name(1, 10) == "ckpt_e0001_s00000010.pt"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]          # no temporary file left behind
    loaded = load_checkpoint(path)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded["model"][k], v)
    opt2 = make_optimizer(model, name=opt_name, lr=0.1, exclude_bn_bias=True)
    opt2.load_state_dict(loaded["optimizer"])
    assert opt2.state_dict()["param_groups"] == opt.state_dict()["param_groups"]
    assert loaded["seed"] == 3 and loaded["config"]["data.crop_scale"] == [0.3, 1.0]


class Payload:
    def __reduce__(self):
        return (os.system, ("echo owned",))


def test_code_in_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / checkpoint_name(1, 1)
    with open(path, "wb") as f:
        pickle.dump({"model": Payload(), "config": {}}, f)
    with pytest.raises(UserError, match="cannot be loaded safely"):
        load_checkpoint(path)


def test_a_refused_file_is_one_line_without_torch_warnings_above_it(tmp_path):
    import warnings

    path = tmp_path / checkpoint_name(1, 1)
    with open(path, "wb") as f:
        pickle.dump({"model": Payload(), "config": {}}, f, protocol=4)      # torch's unpickler warns about it
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(UserError, match="cannot be loaded safely"):
            load_checkpoint(path)
    assert [str(w.message) for w in seen] == []


def test_a_directory_given_as_the_checkpoint_is_named_as_such(tmp_path):
    with pytest.raises(UserError, match=rf"^checkpoint {tmp_path} is a directory, not a file: give the path of the "
                                        rf"file inside it$"):
        load_checkpoint(tmp_path)


def test_failed_save_leaves_no_file(tmp_path):
    _, _, state = trained_state()
    state["bad"] = lambda: 0                       # not picklable: torch.save fails midway
    with pytest.raises(Exception):
        save_checkpoint(tmp_path, state)
    assert list(tmp_path.iterdir()) == []


def test_newest_valid_checkpoint_wins_and_corrupt_ones_are_skipped(tmp_path):
    _, _, state = trained_state()
    for epoch, step in ((1, 10), (2, 20), (3, 30)):
        save_checkpoint(tmp_path, {**state, "epoch": epoch, "step": step})
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in list_checkpoints(tmp_path)] == [checkpoint_name(3, 30), checkpoint_name(2, 20),
                                                             checkpoint_name(1, 10)]
    newest = tmp_path / checkpoint_name(3, 30)
    newest.write_bytes(newest.read_bytes()[:200])   # truncated by a crash
    warnings = []
    path, loaded = find_latest(tmp_path, warn=warnings.append)
    assert path.name == checkpoint_name(2, 20) and loaded["epoch"] == 2
    assert len(warnings) == 1 and checkpoint_name(3, 30) in warnings[0]
    assert find_latest(tmp_path / "empty") is None


def test_non_finite_weights_are_refused_at_load_and_named_as_such(tmp_path):
    """A diverged run's checkpoint is not blamed on the learning rate: its NaN/inf tensors are named, and the fix
    points at the newest earlier checkpoint (or, with none, at starting over)."""
    from ffcv_amcl.checkpoint import load_weights

    model, _, state = trained_state()
    first = save_checkpoint(tmp_path, state)
    weights = {k: v.clone() for k, v in state["model"].items()}
    weights["0.weight"][1, 2] = float("nan")
    weights["2.bias"][0] = float("inf")
    bad = save_checkpoint(tmp_path, {**state, "model": weights, "epoch": 2, "step": 20})
    with pytest.raises(UserError) as err:
        load_weights(model, load_checkpoint(bad), bad)
    assert str(err.value) == (f"checkpoint {bad} holds non-finite weights (2 NaN/inf values, in 0.weight (1), "
                              f"2.bias (1)): the run diverged before it was saved, and nothing can be resumed, "
                              f"evaluated or exported from it; use the newest earlier checkpoint, {first}")
    assert torch.equal(model.state_dict()["0.weight"], state["model"]["0.weight"])        # nothing loaded
    first.unlink()
    with pytest.raises(UserError, match="start the run over"):
        load_weights(model, load_checkpoint(bad), bad)


def test_missing_or_foreign_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "x.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(UserError, match="not an ffcv-amcl training checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_another_format_is_refused_in_one_line(tmp_path):
    _, _, state = trained_state()
    path = tmp_path / checkpoint_name(1, 10)
    for fmt in (FORMAT + 1, None):
        torch.save({**state, "format": fmt}, path)
        with pytest.raises(UserError) as err:
            load_checkpoint(path)
        assert str(err.value) == (f"checkpoint {path} is in format {fmt!r} and this version of ffcv-amcl reads "
                                  f"format {FORMAT}: use the version that wrote it")
    assert find_latest(tmp_path, warn=lambda msg: None) is None          # never picked for a resume either


def test_the_reader_fills_what_older_checkpoints_ran_with(tmp_path):
    """A checkpoint without loss.amcl_form trained the ref form; without the later fields it was a one-process,
    epoch-boundary checkpoint with no history; temperature-health totals kept as epoch_stats['health'] are
    the temperature_health monitor's."""
    old = {"model": {}, "optimizer": {}, "scaler": {}, "epoch": 1, "step": 4, "config": {"model.heads": 3},
           "epoch_stats": {"loss_sum": 2.0, "n": 2, "health": {"counts_pos": torch.ones(3, 4)}}}
    state = load_checkpoint(save_checkpoint(tmp_path, old))
    assert state["config"] == {"model.heads": 3, "loss.amcl_form": "ref"}
    assert (state["batch_in_epoch"], state["world_size"], state["history"]) == (0, 1, [])
    assert set(state["epoch_stats"]) == {"loss_sum", "n", "monitors"}
    assert torch.equal(state["epoch_stats"]["monitors"]["temperature_health"]["counts_pos"], torch.ones(3, 4))
    assert saved_settings(state) == {"model.heads": 3, "loss.amcl_form": "ref", "world_size": 1}
    new = load_checkpoint(save_checkpoint(tmp_path, {**old, "step": 8, "config": {"loss.amcl_form": "post"}}))
    assert new["config"]["loss.amcl_form"] == "post"                  # a stored setting is never overridden


class _FullDisk:
    """A file whose disk fills after `room` bytes."""

    def __init__(self, path, mode, room=1000):
        self.f, self.room = open(path, mode), room

    def write(self, data):
        self.room -= len(data)
        if self.room < 0:
            raise OSError(28, "No space left on device")
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_disk_full_at_save_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    import ffcv_amcl.checkpoint as checkpoint

    monkeypatch.setattr(checkpoint, "open", _FullDisk, raising=False)
    with pytest.raises(UserError) as err:
        save_checkpoint(tmp_path, trained_state()[2])
    assert str(err.value) == (f"no space left on device writing {tmp_path / checkpoint_name(1, 10)}: free space "
                              f"or choose another folder")
    assert os.listdir(tmp_path) == []


def test_disk_full_at_save_on_a_small_tmpfs(tmp_path):
    from tests.tmpfs import mounted_tmpfs

    _, _, state = trained_state()
    state["model"]["big"] = torch.zeros(1 << 20)  # 4 MiB on a 2 MiB disk
    with mounted_tmpfs(tmp_path / "small", "2M") as small:
        with pytest.raises(UserError, match=r"^no space left on device writing .*ckpt_e0001_s00000010\.pt: free"):
            save_checkpoint(small, state)
        assert os.listdir(small) == []
