"""The plots command on a short real training run: every figure is written, the histograms count the right
pairs with the right values, and bad run folders fail in one line."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.train_helpers import REPO, digits_betons

PNG = b"\x89PNG\r\n\x1a\n"
HEADS = 2


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One epoch of SimCLR-AMCL (2 heads) on 96 digits, kNN monitor on 48 held-out digits."""
    from ffcv_amcl.train import run

    root = tmp_path_factory.mktemp("plots_run")
    train, test = digits_betons(str(root), 96, 48)
    paths = {"train": train, "test": test}
    folder = root / "run"
    run([f"--data.train_dataset={paths['train']}", f"--data.val_dataset={paths['test']}", "--data.num_workers=1",
         "--data.augs=acd", "--data.crop_scale=0.3,1", "--model.stem=imagenet", f"--model.heads={HEADS}",
         "--training.batch_size=32", "--training.epochs=1", "--training.lr=0.05", "--training.device=cpu",
         "--training.precision=fp32", "--eval.knn_every=1", "--eval.knn_k=20", f"--logging.folder={folder}"])
    return folder


@pytest.fixture(scope="module")
def plotted(trained, tmp_path_factory):
    from ffcv_amcl.plots import make_plots

    out = tmp_path_factory.mktemp("plots_out")
    written = make_plots(str(trained), str(out), batch_size=32, device="cpu", num_workers=1)
    return out, written


def test_every_figure_is_a_non_empty_png(plotted):
    out, written = plotted
    names = {p.name for p in written}
    expected = {"loss.png", "lr.png", "knn.png", "tau_curves.png", "tau_health.png", "online_linear.png",
                "separation.png", "collapse.png", *(f"similarity_head{c}.png" for c in range(HEADS)),
                *(f"temperature_head{c}.png" for c in range(HEADS))}
    assert names == expected
    assert {p.name for p in out.iterdir()} == expected            # nothing else (no temporary files) left
    for p in written:
        data = p.read_bytes()
        assert len(data) > 2000 and data.startswith(PNG), p.name


def test_one_similarity_histogram_per_head(plotted):
    out, _ = plotted
    assert len(list(out.glob("similarity_head*.png"))) == HEADS
    assert len(list(out.glob("temperature_head*.png"))) == HEADS


def test_pair_similarities_match_a_direct_computation(trained):
    """Positive pairs are (view a of image i, view b of image i), negatives every pair of different images;
    values equal cosine similarities computed view by view in float64 (eval-mode BN: batch-independent)."""
    from ffcv_amcl.losses.temperature import pair_tau
    from ffcv_amcl.plots import head_pairs, load_run

    model, _, _, _ = load_run(trained, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    n = 5
    va, vb = (torch.randn(n, 3, 32, 32, generator=g) for _ in range(2))
    pairs = head_pairs(model, va, vb)
    with torch.no_grad():
        z = [model.projector(model.backbone(v)).double() for v in (va, vb)]      # each (C, n, D)
        zs = torch.cat(z, 1)
        phi = model.criterion.phi.double()
        for c in range(HEADS):
            pos = [F.cosine_similarity(z[0][c, i], z[1][c, i], dim=0).item() for i in range(n)]
            neg = [F.cosine_similarity(zs[c, i], zs[c, j], dim=0).item()
                   for i in range(2 * n) for j in range(i + 1, 2 * n) if i % n != j % n]
            assert len(pairs["sim_pos"][c]) == n and len(pairs["sim_neg"][c]) == 2 * n * (n - 1)
            np.testing.assert_allclose(pairs["sim_pos"][c], pos, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(pairs["sim_neg"][c], neg, rtol=1e-4, atol=1e-5)
            u = F.normalize(zs[c], dim=-1)
            tau = [pair_tau((phi(u[i]) * phi(u[i + n])).sum(), model.criterion.tau_min,
                            model.criterion.tau_max).item() for i in range(n)]
            np.testing.assert_allclose(pairs["tau_pos"][c], tau, rtol=1e-4)


def test_overlap_coefficient():
    from ffcv_amcl.plots import overlap

    bins = np.linspace(0, 1, 11)
    a = np.linspace(0.01, 0.49, 50)
    assert overlap(a, a, bins) == pytest.approx(1.0)
    assert overlap(a, a + 0.5, bins) == pytest.approx(0.0)


def run_cli(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("FFCV_AMCL_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "ffcv_amcl.plots", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def one_error_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_run_folder_without_metrics_fails_in_one_line(trained, tmp_path):
    folder = tmp_path / "no_metrics"
    shutil.copytree(trained, folder)
    (folder / "metrics.jsonl").unlink()
    line = one_error_line(run_cli("--run", str(folder), "--out", str(tmp_path / "out")))
    assert "metrics.jsonl" in line
    assert not (tmp_path / "out").exists()


def test_checkpoint_that_does_not_match_the_config_fails_in_one_line(trained, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(trained, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model.heads"] = HEADS + 1                               # config.json of another run
    (folder / "config.json").write_text(json.dumps(cfg))
    line = one_error_line(run_cli("--run", str(folder), "--out", str(tmp_path / "out")))
    assert f"model.heads: checkpoint {HEADS}, now {HEADS + 1}" in line and "mixes two runs" in line
    assert not (tmp_path / "out").exists()
