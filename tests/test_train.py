"""The training loop on small digits subsets: every method runs, resume is exact, failures are clean."""
import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch

from ffcv_amcl.checkpoint import list_checkpoints, load_checkpoint
from ffcv_amcl.errors import UserError
from ffcv_amcl.train import SIGTERM_EXIT, run
from tests.train_helpers import REPO, digits_betons, tiny_args


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return digits_betons(str(tmp_path_factory.mktemp("digits")), 128, 120)


def metrics(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


METHOD_RUNS = [(m, a, []) for m in ("simclr", "moco", "simsiam", "barlow_twins", "byol") for a in (1, 0)] + [
    ("moco", 1, ["--loss.mochi_n_hard=16", "--loss.mochi_s1=4", "--loss.mochi_s2=4"]),
    ("moco", 0, ["--loss.mochi_n_hard=16", "--loss.mochi_s1=4", "--loss.mochi_s2=4"]),
    ("moco", 0, ["--loss.ascl=1", "--data.augs_b=ae", "--loss.ascl_variant=ahcl"]),
]


@pytest.mark.parametrize("method,amcl,extra", METHOD_RUNS,
                         ids=[f"{m}-amcl{a}{'-' + e[0][7:12] if e else ''}" for m, a, e in METHOD_RUNS])
def test_every_method_trains_a_few_steps(data, tmp_path, method, amcl, extra):
    heads = 2 if amcl else 1
    out = run(tiny_args(data[0], tmp_path, f"--model.method={method}", f"--model.amcl={amcl}",
                        f"--model.heads={heads}", "--training.max_steps=2", "--training.epochs=1",
                        "--loss.queue_size=256", "--model.proj_dim=64", "--model.proj_hidden=128",
                        "--model.pred_hidden=32", *extra))
    assert len(out["losses"]) == 2 and all(math.isfinite(x) for x in out["losses"])
    rec = metrics(tmp_path)
    assert [r["epoch"] for r in rec] == [0, 1] and rec[1]["step"] == 2
    assert math.isfinite(rec[1]["loss"]) and rec[1]["images_per_s"] > 0
    tau_keys = [k for k in rec[1] if k.startswith("tau_pos_head")]
    assert len(tau_keys) == (heads if amcl else 0)
    state = load_checkpoint(out["checkpoint"])
    assert state["step"] == 2 and state["config"]["model.method"] == method
    if method == "moco":
        assert int(state["model"]["queue_ptr"]) == 2 * (32 if "--loss.ascl=1" in extra else 64)  # keys per step


def test_knn_monitor_and_logs(data, tmp_path):
    out = run(tiny_args(data[0], tmp_path, "--training.epochs=2", "--eval.knn_every=1", "--model.heads=2",
                        val=data[1]))
    rec = metrics(tmp_path)
    assert [r["epoch"] for r in rec] == [0, 1, 2]
    assert all(0 <= r["knn_top1"] <= 100 for r in rec)
    assert rec[0]["loss"] is None and rec[0]["step"] == 0          # epoch 0 = the untrained network
    assert rec[2]["step"] == 8 and rec[2]["lr"] < rec[1]["lr"]      # 4 steps per epoch, cosine decay
    assert {"tau_pos_head0", "tau_pos_head1", "tau_neg_head0", "tau_neg_head1"} <= set(rec[1])
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model.heads"] == 2 and saved["data.val_dataset"] == data[1]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt_e0002_s00000008.pt"]
    assert out["records"][-1] == rec[-1]


def weights(path):
    return load_checkpoint(path)["model"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


RESUME_ARGS = ["--model.method=moco", "--model.heads=2", "--training.epochs=2", "--loss.queue_size=128",
               "--training.checkpoint_every=1", "--model.proj_dim=32"]


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("full")
    return folder, run(tiny_args(data[0], folder, *RESUME_ARGS))


def test_resume_reaches_the_same_weights(data, tmp_path, uninterrupted, capsys):
    full_folder, full = uninterrupted
    # Interrupted mid-epoch (training.max_steps saves there, as SIGTERM does), then resumed to the end.
    part = run(tiny_args(data[0], tmp_path, *RESUME_ARGS, "--training.max_steps=3"))
    assert part["losses"] == full["losses"][:3]                       # seeded: the same run so far
    assert load_checkpoint(part["checkpoint"])["batch_in_epoch"] == 3
    rest = run(tiny_args(data[0], tmp_path, *RESUME_ARGS))
    assert "resumed from" in capsys.readouterr().out
    assert rest["losses"] == full["losses"][3:]
    assert_same_weights(weights(full["checkpoint"]), weights(rest["checkpoint"]))
    assert [r["epoch"] for r in metrics(tmp_path)] == [0, 1, 2]
    assert [r["loss"] for r in metrics(tmp_path)][1:] == pytest.approx(
        [r["loss"] for r in metrics(full_folder)][1:], rel=1e-12)
    # A crash that corrupted the newest checkpoint: resume from the epoch-1 one, same end point.
    newest = list_checkpoints(tmp_path)[0]
    newest.write_bytes(b"\0" * 100)
    again = run(tiny_args(data[0], tmp_path, *RESUME_ARGS))
    out = capsys.readouterr().out
    assert "resumed from" in out and "ckpt_e0001_s00000004.pt at epoch 1" in out
    assert_same_weights(weights(full["checkpoint"]), weights(again["checkpoint"]))


def test_sigterm_saves_and_a_resume_finishes_identically(data, tmp_path, uninterrupted):
    _, full = uninterrupted
    proc = subprocess.Popen([sys.executable, "-m", "ffcv_amcl.train",
                             *tiny_args(data[0], tmp_path, *RESUME_ARGS, "--training.log_every=1")],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first_line = proc.stdout.readline()                # the progress bar: training has started
    proc.send_signal(signal.SIGTERM)
    rest_out, _ = proc.communicate(timeout=300)
    assert proc.returncode == SIGTERM_EXIT == 143, first_line + rest_out     # pre-empted is not finished
    assert "stopped by SIGTERM at step" in rest_out and "saved" in rest_out, rest_out
    assert load_checkpoint(list_checkpoints(tmp_path)[0])["step"] < 8
    resumed = run(tiny_args(data[0], tmp_path, *RESUME_ARGS))
    assert_same_weights(weights(full["checkpoint"]), weights(resumed["checkpoint"]))


def test_ctrl_c_saves_like_sigterm_and_exits_130(data, tmp_path, monkeypatch, capsys):
    """Ctrl-C after the second step: that step finishes, a checkpoint is saved there, the exit code is 130."""
    import ffcv_amcl.train as train

    step, steps = train.train_step, []

    def pressed_on_the_second(*args, **kwargs):
        steps.append(step(*args, **kwargs))
        if len(steps) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return steps[-1]

    monkeypatch.setattr(train, "train_step", pressed_on_the_second)
    with pytest.raises(SystemExit) as exit_:
        train.main(tiny_args(data[0], tmp_path, "--training.epochs=1", "--model.heads=1"))
    err = capsys.readouterr().err
    assert exit_.value.code == 130 and "stopped by SIGINT at step 2 (epoch 1, batch 2/4); saved" in err, err
    assert len(steps) == 2 and load_checkpoint(list_checkpoints(tmp_path)[0])["step"] == 2


@pytest.mark.parametrize("name,code", [("SIGTERM", 143)])
def test_a_signal_during_start_up_ends_the_process_with_one_line(data, tmp_path, name, code):
    """Delivered while the settings are checked (nothing to save yet): one line, the signal's exit code, no run
    folder."""
    script = ("import os, signal, sys, time\n"
              "import ffcv_amcl.config as config\n"
              "checks = config.validate\n"
              "def slow(*a, **k):\n"
              f"    os.kill(os.getpid(), signal.{name}); time.sleep(5)\n"
              "    return checks(*a, **k)\n"
              "config.validate = slow\n"
              "from ffcv_amcl.train import main\n"
              "main(sys.argv[1:])\n")
    proc = subprocess.run([sys.executable, "-c", script, *tiny_args(data[0], tmp_path / "run")], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == code and proc.stderr.splitlines() == [
        f"stopped by {name} during start-up, before training began: nothing to save; rerun the same command to "
        f"start"], proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_quickstart_learns(tmp_path):
    """The README's main command on the embedded digits at 6 of its 20 epochs (the same warm-up and a shorter
    cosine): kNN top-1 ends >= 10 points above epoch 0's (95.0 vs 79.7 measured), and every stage of the script
    prints its lines."""
    work, epochs = tmp_path / "qs", 6
    proc = subprocess.run(["bash", "scripts/quickstart.sh", f"--training.epochs={epochs}"], cwd=REPO,
                          env={**os.environ, "WORK": str(work)}, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [r for r in metrics(work / "train") if "knn_top1" in r]
    assert rows[0]["epoch"] == 0 and rows[-1]["epoch"] == epochs
    assert rows[-1]["knn_top1"] >= rows[0]["knn_top1"] + 10, rows
    assert "kNN top-1 before training" in proc.stdout and f"kNN top-1 after {epochs} epochs" in proc.stdout
    assert "images/s" in proc.stdout and "linear_top1" in proc.stdout


def test_nonfinite_loss_stops_and_keeps_the_last_checkpoint(data, tmp_path):
    args = tiny_args(data[0], tmp_path, "--training.epochs=2", "--training.checkpoint_every=1",
                     "--training.log_every=1")
    run([*args, "--training.max_steps=4"])                             # one good epoch, checkpointed
    (good,) = list_checkpoints(tmp_path)
    before = good.read_bytes()
    with pytest.raises(UserError) as err:
        run([*args, "--training.lr=1e38", "--training.clip_grad=0", "--training.resume_changed=1"])
    msg = str(err.value)
    assert "non-finite loss" in msg and "at step " in msg and "learning rate" in msg and good.name in msg
    assert list_checkpoints(tmp_path) == [good] and good.read_bytes() == before


def test_checkpoint_from_another_model_is_refused(data, tmp_path):
    run(tiny_args(data[0], tmp_path, "--training.max_steps=1"))
    with pytest.raises(UserError, match="model.heads: checkpoint 3, now 1"):
        run(tiny_args(data[0], tmp_path, "--model.heads=1"))


@pytest.mark.parametrize("method,extra", [("vicreg", []), ("dino", ["--data.local_crops=2", "--data.local_size=16"]),
                                          ("simclr", ["--data.local_crops=2", "--data.local_size=16"])])
def test_new_methods_resume_bit_exactly(data, tmp_path_factory, method, extra):
    """The new methods and multi-crop (the loader's local views through the trainer): two finite steps; one step,
    stop (saved mid-epoch), resume for the second: the weights of the two uninterrupted steps."""
    args = [f"--model.method={method}", "--model.amcl=0", "--model.heads=1", "--training.epochs=1",
            "--model.proj_dim=64", "--model.proj_hidden=64", "--model.pred_hidden=32", *extra]
    full, part = tmp_path_factory.mktemp("full"), tmp_path_factory.mktemp("part")
    whole = run(tiny_args(data[0], full, *args, "--training.max_steps=2"))
    run(tiny_args(data[0], part, *args, "--training.max_steps=1"))
    rest = run(tiny_args(data[0], part, *args, "--training.max_steps=2"))
    assert len(whole["losses"]) == 2 and all(math.isfinite(x) for x in whole["losses"])
    assert rest["losses"] == whole["losses"][1:]
    assert_same_weights(weights(whole["checkpoint"]), weights(rest["checkpoint"]))
