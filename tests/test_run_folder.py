"""A run folder belongs to one training at a time, resume=none really starts over, a torn metrics line does not
block a resume, and an epoch whose checkpoint failed is not recorded."""
import json

import pytest

from ffcv_amcl import checkpoint as checkpoint_module
from ffcv_amcl.checkpoint import list_checkpoints, load_checkpoint
from ffcv_amcl.errors import UserError
from ffcv_amcl.run_folder import lock_folder
from ffcv_amcl.train import run
from tests.train_helpers import digits_betons, tiny_args


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return digits_betons(str(tmp_path_factory.mktemp("digits")), 128, 120)


def epochs(folder):
    return [json.loads(line)["epoch"] for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_a_second_training_in_a_locked_folder_exits_naming_the_holder(data, tmp_path):
    """...and once the folder is free, the next training removes temporary files of writers that are gone."""
    import os

    holder = lock_folder(tmp_path)              # as a running training holds it
    try:
        with pytest.raises(UserError, match=f"in use by another training \\(PID {os.getpid()}\\)") as err:
            run(tiny_args(data[0], tmp_path, "--training.max_steps=1"))
        assert "\n" not in str(err.value)
        assert not (tmp_path / "metrics.jsonl").exists() and not list_checkpoints(tmp_path)
    finally:
        holder.close()                          # the OS lock goes with the file (and with the process)
    stale = tmp_path / ".ckpt_e0001_s00000004.pt.tmp-999999"             # left by a writer killed with -9
    stale.write_bytes(b"\0" * 64)
    run(tiny_args(data[0], tmp_path, "--training.max_steps=1"))
    assert not stale.exists()


def test_unreadable_checkpoints_alone_never_restart_the_run(data, tmp_path):
    """resume=auto over a folder whose only checkpoint cannot be read refuses in one line, before anything is
    built: the old run's metrics and checkpoint stay as they were."""
    (tmp_path / "ckpt_e0003_s00000012.pt").write_bytes(b"\0" * 100)          # torn by a crash
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 3, "step": 12, "loss": 5.0}\n')
    with pytest.raises(UserError) as err:
        run(tiny_args(data[0], tmp_path, "--training.max_steps=1"))
    assert str(err.value) == (f"logging.folder {tmp_path} holds checkpoints but none can be read (1 skipped, "
                              f"above): restore one, resume from a file with --training.resume=PATH, or delete "
                              f"the run with --training.resume=none --training.overwrite=1")
    assert epochs(tmp_path) == [3] and (tmp_path / "ckpt_e0003_s00000012.pt").read_bytes() == b"\0" * 100


def test_resume_none_starts_over_or_refuses(data, tmp_path, capsys):
    run(tiny_args(data[0], tmp_path, "--training.epochs=2", "--training.checkpoint_every=1"))      # an earlier run
    with pytest.raises(UserError, match="--training.overwrite=1"):
        run(tiny_args(data[0], tmp_path, "--training.epochs=1", "--training.resume=none", "--model.heads=1"))
    assert [p.name for p in list_checkpoints(tmp_path)][0] == "ckpt_e0002_s00000008.pt"       # untouched
    fresh = run(tiny_args(data[0], tmp_path, "--training.epochs=1", "--training.resume=none",
                          "--training.overwrite=1", "--model.heads=1"))
    removed = [ln for ln in capsys.readouterr().err.splitlines() if "deleted" in ln]
    assert removed == [f"warning: training.overwrite=1 deleted the earlier run in {tmp_path}: 2 checkpoints "
                       f"(ckpt_e0001_s00000004.pt to ckpt_e0002_s00000008.pt), metrics.jsonl, config.json"]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt_e0001_s00000004.pt"]
    assert epochs(tmp_path) == [0, 1] and fresh["step"] == 4
    again = run(tiny_args(data[0], tmp_path, "--training.epochs=1", "--model.heads=1"))            # auto: the new run
    assert again["step"] == 4 and load_checkpoint(again["checkpoint"])["config"]["model.heads"] == 1


def test_a_torn_metrics_line_is_skipped_on_resume(data, tmp_path, capsys):
    args = tiny_args(data[0], tmp_path, "--training.epochs=2", "--training.checkpoint_every=1")
    run([*args, "--training.max_steps=4"])                             # epoch 1 done and checkpointed
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "step": 8, "lo')                        # killed while writing the next record
    run(args)
    assert epochs(tmp_path) == [0, 1, 2]
    assert "line 3 is damaged" in capsys.readouterr().err


def test_an_epoch_whose_checkpoint_failed_is_not_recorded(data, tmp_path, monkeypatch):
    def full_disk(folder, state):
        raise UserError(f"no space left on device writing {folder}: free some space")

    monkeypatch.setattr(checkpoint_module, "save_checkpoint", full_disk)
    with pytest.raises(UserError, match="no space left"):
        run(tiny_args(data[0], tmp_path, "--training.epochs=1"))
    assert epochs(tmp_path) == [0]                                     # epoch 1 was never saved


def test_warnings_go_to_stderr(data, tmp_path, capsys):
    run(tiny_args(data[0], tmp_path, "--training.epochs=2", "--training.checkpoint_every=1",
                  "--training.max_steps=4"))
    list_checkpoints(tmp_path)[0].write_bytes(b"\0" * 10)              # a damaged checkpoint is skipped ...
    capsys.readouterr()
    with pytest.raises(UserError, match="none can be read"):                # ... the only one: no restart
        run(tiny_args(data[0], tmp_path, "--training.epochs=2", "--training.checkpoint_every=1"))
    out = capsys.readouterr()
    assert "skipping ckpt_e0001" in out.err and "skipping" not in out.out       # ... with a warning on stderr
