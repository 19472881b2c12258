"""Folders without labels: write_datasets.py --cfg.labels=none converts any tree of images (label -1, sidecar
"labelled": false); a run trains on it with labelled sets for its evaluations (data.val_dataset,
data.eval_train_dataset), and every evaluation refuses it alone with one line naming the flag."""
import json
import subprocess
import sys

import numpy as np
import pytest

from ffcv_amcl.errors import UserError
from tests.data.test_write_datasets import read_with_loader
from tests.train_helpers import REPO, digits_betons, tiny_args

pytestmark = pytest.mark.timeout(600)

# Where the images go under the split folder: flat files, nested folders, upper-case extensions.
PLACES = ["{k:02d}.png"] * 10 + ["trip/{k:02d}.png"] * 12 + ["trip/day 2/{k:02d}.PNG"] * 10


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory):
    """(the .beton written by write_datasets.py from a tree without classes, the images put in the tree, the
    command's output, the labelled (train, val) digits sets)."""
    from PIL import Image

    from ffcv_amcl.data.digits import load_digits

    root = tmp_path_factory.mktemp("unlabelled")
    images = load_digits("train")[0][:len(PLACES)]
    for k, (place, image) in enumerate(zip(PLACES, images)):
        path = root / "photos" / place.format(k=k)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
    (root / "photos" / ".thumbs").mkdir()
    Image.fromarray(images[0][::2, ::2]).save(root / "photos" / ".thumbs" / "skipped.png")   # hidden folder
    Image.fromarray(images[1][::2, ::2]).save(root / "photos" / "._skipped.png")              # hidden file
    (root / "photos" / "notes.txt").write_text("not an image")
    out = root / "photos.beton"
    proc = subprocess.run([sys.executable, str(REPO / "write_datasets.py"), "--cfg.dataset=imagefolder",
                           "--cfg.labels=none", f"--cfg.data_dir={root}", "--cfg.split=photos",
                           f"--cfg.write_path={out}", "--cfg.num_workers=1"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return str(out), images, proc.stdout, digits_betons(str(root), 128, 120)


def test_a_tree_without_classes_converts_unlabelled(unlabelled):
    path, images, stdout, _ = unlabelled
    stored, labels = read_with_loader(path)
    assert (labels == -1).all() and len(stored) == len(images)
    assert sorted(s.tobytes() for s in stored) == sorted(i.tobytes() for i in images)   # every image, once
    meta = json.loads(open(path + ".json").read())
    assert meta["labelled"] is False and meta["num_classes"] is None and meta["classes"] is None
    assert f"{len(images)} images, unlabelled" in stdout


def test_labels_none_is_for_image_folders_only(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "write_datasets.py"), "--cfg.dataset=digits",
                           "--cfg.labels=none", "--cfg.split=train", f"--cfg.write_path={tmp_path / 'x.beton'}"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "drop --cfg.labels" in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def trained(unlabelled, tmp_path_factory):
    """A run of one step on the unlabelled set, its kNN monitor on the labelled digits sets."""
    from ffcv_amcl.train import run

    path, _, _, (train, val) = unlabelled
    folder = tmp_path_factory.mktemp("run")
    return run(tiny_args(path, folder, "--training.max_steps=1", "--eval.knn_every=1", "--eval.knn_k=10",
                         "--eval.online_linear=0", f"--data.eval_train_dataset={train}", val=val))


def test_a_run_trains_on_it_with_labelled_evaluation_sets(trained):
    records = trained["records"]
    assert [r["epoch"] for r in records] == [0, 1] and np.isfinite(records[-1]["loss"])
    assert all(0 <= r["knn_top1"] <= 100 for r in records)


def test_eval_uses_the_labelled_training_split_of_the_run(unlabelled, trained, tmp_path):
    from ffcv_amcl.eval import main

    out = tmp_path / "eval.json"
    with pytest.raises(SystemExit) as code:
        main([f"--checkpoint={trained['checkpoint']}", "--eval.linear_epochs=2", "--eval.knn_k=10", f"--output={out}"])
    result = json.loads(out.read_text())
    assert code.value.code == 0 and result["train_images"] == 128 and result["val_images"] == 120


@pytest.mark.parametrize("split,needle", [("train", "error: data.train_dataset={u} is unlabelled (written with "
                                                    "--cfg.labels=none): kNN and the linear probe train on labels; "
                                                    "pass --data.eval_train_dataset=a labelled .beton"),
                                          ("val", "error: data.val_dataset={u} is unlabelled")])
def test_eval_refuses_it_alone(unlabelled, trained, capsys, split, needle):
    from ffcv_amcl.eval import main

    path = unlabelled[0]
    with pytest.raises(SystemExit) as code:
        main([f"--checkpoint={trained['checkpoint']}", f"--data.{split}_dataset={path}"])
    err = capsys.readouterr().err
    assert code.value.code == 2 and err.count("\n") == 1 and err.startswith(needle.format(u=path)), err


@pytest.mark.parametrize("flags,needle", [
    (["--eval.knn_every=1", "--eval.online_linear=0"], "data.train_dataset={u} is unlabelled (written with "
                                                      "--cfg.labels=none): the kNN monitor votes with labels; set "
                                                      "--data.eval_train_dataset=a labelled .beton"),
    (["--eval.knn_every=1", "--eval.online_linear=0", "--data.eval_train_dataset={u}"],
     "data.eval_train_dataset={u} is unlabelled"),
    (["--eval.knn_every=0", "--eval.online_linear=1"], "the online probe learns from the training views' labels; "
                                                       "set --eval.online_linear=0"),
    (["--eval.knn_every=1", "--eval.online_linear=0", "--data.eval_train_dataset={t}", "--data.val_dataset={u}"],
     "data.val_dataset={u} is unlabelled"),
])
def test_each_monitor_refuses_it_alone(unlabelled, tmp_path, flags, needle):
    from ffcv_amcl.config import parse_config

    path, _, _, (train, val) = unlabelled
    flags = [f.format(u=path, t=train) for f in flags]
    with pytest.raises(UserError) as err:
        parse_config(tiny_args(path, tmp_path, *flags, val=val), world_size=1)
    assert "\n" not in str(err.value) and needle.format(u=path) in str(err.value), str(err.value)
    assert not (tmp_path / "config.json").exists()
