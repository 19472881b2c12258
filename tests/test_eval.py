"""kNN monitor and linear probe against independent references; the eval CLI on a real checkpoint."""
import json

import numpy as np
import pytest
import torch

from ffcv_amcl.evaluation import knn_predict, knn_top1, linear_probe
from ffcv_amcl.train import run
from tests.train_helpers import digits_betons, run_cli, tiny_args


def knn_reference(train, labels, test, k, t, num_classes):
    """Plain float64 loops: cosine similarity, k nearest, votes exp(s / t) per class."""
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    test = test / np.linalg.norm(test, axis=1, keepdims=True)
    preds = []
    for x in test:
        sims = [float(np.dot(x, y)) for y in train]
        order = sorted(range(len(sims)), key=lambda j: -sims[j])[:k]
        votes = [0.0] * num_classes
        for j in order:
            votes[labels[j]] += np.exp(sims[j] / t)
        preds.append(int(np.argmax(votes)))
    return np.array(preds)


@pytest.mark.parametrize("k,t", [(1, 0.1), (5, 0.1), (20, 0.5), (200, 0.1)])
def test_knn_matches_reference_loops(k, t):
    g = torch.Generator().manual_seed(k)
    train = torch.randn(60, 8, generator=g)
    labels = torch.randint(0, 4, (60,), generator=g)
    test = torch.randn(25, 8, generator=g)
    ours = knn_predict(train, labels, test, k=k, t=t, num_classes=4, chunk=7)
    ref = knn_reference(train.double().numpy(), labels.numpy(), test.double().numpy(), min(k, 60), t, 4)
    assert ours.tolist() == ref.tolist()


def test_knn_weighting_prefers_close_neighbours():
    # Two class-1 points right next to the query beat three class-0 points far away, with k=5 and t small.
    train = torch.tensor([[1.0, 0.01], [1.0, -0.01], [0.0, 1.0], [0.0, -1.0], [-1.0, 0.0]])
    labels = torch.tensor([1, 1, 0, 0, 0])
    assert knn_predict(train, labels, torch.tensor([[1.0, 0.0]]), k=5, t=0.1).item() == 1
    assert knn_predict(train, labels, torch.tensor([[1.0, 0.0]]), k=5, t=100.0).item() == 0   # ~ majority
    assert knn_top1(train, labels, train[:2], labels[:2], k=1) == 100.0


def test_linear_probe_separates_linearly_separable_features():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 16, generator=g) * 4
    y = torch.randint(0, 5, (400,), generator=g)
    x = centres[y] + torch.randn(400, 16, generator=g) + 100.0     # offset: the probe standardises features
    res = linear_probe(x[:300], y[:300], x[300:], y[300:], epochs=20, lr=0.1, batch_size=64)
    assert res["test_top1"] > 95 and res["train_top1"] > 95
    shuffled = linear_probe(x[:300], y[:300][torch.randperm(300, generator=g)], x[300:], y[300:], epochs=20)
    assert shuffled["test_top1"] < 50                              # labels carry the signal, not the code


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    train, val = digits_betons(str(root), 128, 120)
    out = run(tiny_args(train, root / "run", "--training.max_steps=2", "--model.heads=2"))
    return train, val, out["checkpoint"]


def test_eval_cli_reports_knn_and_linear(trained, tmp_path):
    train, val, ckpt = trained
    out = tmp_path / "res.json"
    proc = run_cli("ffcv_amcl.eval", f"--checkpoint={ckpt}", f"--data.train_dataset={train}",
                   f"--data.val_dataset={val}", "--eval.linear_epochs=10", f"--output={out}", "--eval.knn_k=20")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    assert 0 <= res["knn_top1"] <= 100 and 0 <= res["linear_top1"] <= 100
    assert res["val_images"] == 120 and res["train_images"] == 128
    assert f"knn_top1: {res['knn_top1']:.2f}%" in proc.stdout and "linear_top1:" in proc.stdout
    assert res["linear_top1"] > 30                                  # digits: far above the 10% of chance


@pytest.mark.parametrize("flag,needle", [("--model.arch=resnet50",
                                          "does not fit these settings (model.arch: checkpoint 'resnet18', now "
                                          "'resnet50')"),
                                         ("--model.heads=5", "(model.heads: checkpoint 2, now 5): drop the flag"),
                                         ("--checkpoint=/no/ckpt.pt", "not found"),
                                         ("--output=/missing/dir/x.json",  # refused before the evaluation
                                          "--output: directory /missing/dir does not exist")])
def test_eval_cli_rejects_a_mismatching_checkpoint(trained, flag, needle):
    train, val, ckpt = trained
    proc = run_cli("ffcv_amcl.eval", f"--checkpoint={ckpt}", f"--data.train_dataset={train}",
                   f"--data.val_dataset={val}", flag)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and needle in lines[0], proc.stderr
