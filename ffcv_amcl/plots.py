"""Diagnostic plots of a training run: the curves, and what the heads and the temperature network learned.

    python -m ffcv_amcl.plots --run RUN_FOLDER --out DIR [--batch-size 256] [--device auto] [--augs abcde]

From `metrics.jsonl`: loss.png, lr.png, knn.png (when the kNN monitor ran), online_linear.png (the online
linear probe's validation top-1), tau_curves.png (AMCL's mean temperatures per head and epoch),
tau_health.png (AMCL: median and 10th-90th percentile of the temperatures, and the share at a bound, per epoch),
separation.png (per head and epoch: the overlap of the positive and negative pair-similarity histograms of the
training batches, and the share of positive pairs below 0.5) and collapse.png (RankMe and the projections' std at
the kNN epochs, with their collapse thresholds). From the newest checkpoint and the config stored in it, on one
batch of the validation set seen as two augmented views (the run's own augmentations):

  similarity_head{c}.png   cosine similarity of positive pairs (two views of one image) and negative pairs
                           (views of different images) in head c: the paper's Figure 1 b-g, where the two
                           distributions overlap more as augmentations are added;
  temperature_head{c}.png  (AMCL only) the temperatures the loss's temperature network gives the same
                           positive and negative pairs (Barlow Twins: same- and cross-channel pairs).

Everything is checked before the first file is written; each PNG is written under a temporary name and
renamed, so a failure leaves no half-written figure behind.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F

from ffcv_amcl import distributed as dist
from ffcv_amcl.atomic import atomic_path
from ffcv_amcl.checkpoint import find_latest, restore_model, saved_settings
from ffcv_amcl.compatibility import check_compatible
from ffcv_amcl.errors import ArgumentParser, check, cli, user_io, warn
from ffcv_amcl.model.diagnostics import temperature_pairs, view_pair_masks
from ffcv_amcl.monitoring.metrics import METRICS_FILE, read_metrics
from ffcv_amcl.monitoring.collapse import PROJ_STD_COLLAPSED, RANKME_COLLAPSED
from ffcv_amcl.monitoring.separation import overlap_coefficient
from ffcv_amcl.monitoring.names import (EPOCH, KINDS, KNN_TOP1, LOSS, LR, ONLINE_LINEAR_TOP1, POS_BELOW_HALF,
                                        POS_NEG_OVERLAP, PROJ_STD, RANKME, STEP, TAU_STATS, head_field, heads,
                                        tau_mean, tau_stat)
from ffcv_amcl.run_folder import CONFIG_FILE, read_config

matplotlib.use("Agg")  # files only, no display
POS, NEG = "#1f77b4", "#d62728"


# ---------------------------------------------------------------------------------------------------- inputs

def run_records(run: Path) -> list[dict]:
    """The epoch records of the run's metrics.jsonl; UserError when the folder or the log is missing or holds no
    record."""
    check(run.is_dir(), f"run folder {run} not found: pass the logging.folder of a training run to --run")
    path = run / METRICS_FILE
    check(path.is_file(), f"run folder {run} has no {METRICS_FILE}: point --run at a folder written by "
                          f"ffcv-amcl-train (its logging.folder)")
    records = read_metrics(run)
    check(bool(records), f"{path} holds no epoch record: train for at least one epoch first")
    return records


def load_run(run: Path, device: torch.device):
    """(model in eval mode with the newest checkpoint's weights, its config, the checkpoint path, state)."""
    found = find_latest(run)
    check(found is not None, f"run folder {run} holds no loadable checkpoint (ckpt_e*_s*.pt): train until one "
                             f"is saved (training.checkpoint_every, or the end of the run)")
    path, state = found
    folder_settings = read_config(run)
    if folder_settings is not None:
        check_compatible(saved_settings(state), folder_settings, source=f"checkpoint {path}",
                         fix=f"{run / CONFIG_FILE} belongs to another run (the folder mixes two runs); move the "
                             f"checkpoint to its own run folder")
    model, cfg, state = restore_model(path, device=device, state=state)
    return model, cfg, path, state


def validation_views(cfg, path: str, batch_size: int, device: torch.device, num_workers: int, seed: int,
                     augs: str = ""):
    """One batch of two augmented views of the first images of `path`, with the run's augmentations
    (or `augs`, to see how the trained heads separate pairs under other augmentations)."""
    from ffcv_amcl.config import beton_samples
    from ffcv_amcl.data.loader import first_batch, make_ssl_loader, view_options

    n = beton_samples(path, "validation dataset")
    check(n >= 2, f"{path} holds {n} image(s): similarity histograms need at least 2")
    views = {**view_options(cfg.data), "local_crops": 0}
    if augs:
        views.update(augs=augs, augs_b=None)
    loader = make_ssl_loader(path, min(batch_size, n), num_workers=num_workers, device=device, seed=seed,
                             drop_last=True, order="sequential", **views)
    view_a, view_b, _ = first_batch(loader)
    return view_a, view_b


# ------------------------------------------------------------------------------------------------- pair sets

@torch.no_grad()
def head_pairs(model, view_a, view_b) -> dict:
    """Per head: cosine similarities of positive and negative pairs of views, and (AMCL) the temperatures the
    loss gives the pairs it compares (model/diagnostics.py's `temperature_pairs`: the loss's own formula)."""
    n = view_a.shape[0]
    zn = F.normalize(model.project(torch.cat([view_a, view_b])).float(), dim=-1)     # (C, 2n, D)
    pos, neg = view_pair_masks(n, zn.device)
    sim = torch.einsum("cid,cjd->cij", zn, zn)
    out = {"sim_pos": [s[pos].cpu().numpy() for s in sim], "sim_neg": [s[neg].cpu().numpy() for s in sim],
           "tau_pos": None, "tau_neg": None, "tau_kind": None}
    pairs = temperature_pairs(model, view_a, view_b)
    if pairs is None:
        if getattr(model, "amcl", False):
            warn("plots: temperature histograms skipped: this model's temperature network takes batches of "
                 "exactly its training batch size")
        return out
    out.update(tau_pos=[t[pairs.pos].cpu().numpy() for t in pairs.tau],
               tau_neg=[t[pairs.neg].cpu().numpy() for t in pairs.tau], tau_kind=pairs.kind)
    return out


def overlap(a: np.ndarray, b: np.ndarray, bins: np.ndarray) -> float:
    """Overlap coefficient of two samples' histograms over `bins` (monitoring.separation's formula), 0..1."""
    ha, _ = np.histogram(a, bins=bins)
    hb, _ = np.histogram(b, bins=bins)
    return float(overlap_coefficient(torch.from_numpy(ha), torch.from_numpy(hb)))


# --------------------------------------------------------------------------------------------------- figures

def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(fig)
    return path


def _figure(title: str, xlabel: str, ylabel: str):
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    if xlabel in ("epoch", "step"):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def curve(records: list[dict], key: str, x: str, out: Path, *, title: str, ylabel: str, logy: bool = False,
          label: str | None = None) -> Path | None:
    points = [(r[x], r[key]) for r in records if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    if not points:
        return None
    fig, ax = _figure(title, "epoch" if x == "epoch" else "step", ylabel)
    xs, ys = zip(*points)
    ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, label=label or key)
    if logy and min(ys) > 0:
        ax.set_yscale("log")
    ax.legend()
    return _save(fig, out)


def tau_curves(records: list[dict], out: Path, run_name: str) -> Path | None:
    shown = heads(records, tau_mean("pos"))
    if not shown:
        return None
    fig, ax = _figure(f"{run_name}: mean learned temperature per head", "epoch", "mean temperature τ over the epoch")
    for c in shown:
        for kind, style in zip(KINDS, ("-", "--")):
            field = head_field(tau_mean(kind), c)
            pts = [(r[EPOCH], r[field]) for r in records
                   if isinstance(r.get(field), (int, float)) and math.isfinite(r[field])]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, style, marker="o" if len(xs) < 30 else None, color=f"C{c}",
                        label=f"head {c}, {'positive' if kind == 'pos' else 'negative'} pairs")
    values = [v for line in ax.get_lines() for v in line.get_ydata()]
    if min(values) > 0 and max(values) / min(values) > 10:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    return _save(fig, out)


def tau_health_curves(records: list[dict], out: Path, run_name: str) -> Path | None:
    """Per epoch and head: median and 10th-90th percentile band of tau+ and of the selected negatives' tau
    (left), and the shares within 1% of a bound (right): is the temperature adapting or stuck at a bound?"""
    shown = heads(records, tau_stat("pos", "p50"))
    if not shown:
        return None
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for c in shown:
        for kind, style in zip(KINDS, ("-", "--")):
            f = {name: head_field(tau_stat(kind, name), c) for name in TAU_STATS}
            rows = [r for r in records if isinstance(r.get(f["p50"]), (int, float))]
            if not rows:
                continue
            ep = [r[EPOCH] for r in rows]
            label = f"head {c}, {'positive' if kind == 'pos' else 'negative'} pairs"
            left.plot(ep, [r[f["p50"]] for r in rows], style, color=f"C{c}", label=label)
            left.fill_between(ep, [r[f["p10"]] or np.nan for r in rows],
                              [r[f["p90"]] or np.nan for r in rows], color=f"C{c}", alpha=0.15)
            right.plot(ep, [100 * (r[f["at_min"]] + r[f["at_max"]]) for r in rows], style, color=f"C{c}",
                       marker="o" if len(ep) < 30 else None, label=label)
    left.set_yscale("log")
    left.set(title=f"{run_name}: temperatures (median, 10th-90th percentile)", xlabel="epoch", ylabel="τ")
    right.set(title="share within 1% of tau_min or tau_max", xlabel="epoch", ylabel="% of pairs", ylim=(-2, 102))
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, out)


def separation_curves(records: list[dict], out: Path, run_name: str) -> Path | None:
    """Per epoch and head: the overlap of the positive and negative similarity histograms (left) and the share of
    positive pairs below 0.5 (right), from the training batches (monitoring.separation)."""
    shown = heads(records, POS_NEG_OVERLAP)
    if not shown:
        return None
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, base in ((left, POS_NEG_OVERLAP), (right, POS_BELOW_HALF)):
        for c in shown:
            pts = [(r[EPOCH], r[head_field(base, c)]) for r in records
                   if isinstance(r.get(head_field(base, c)), (int, float))]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, color=f"C{c}", label=f"head {c}")
        ax.set(xlabel="epoch", ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    left.set(title=f"{run_name}: positive/negative overlap", ylabel="overlap coefficient (0 apart, 1 the same)")
    right.set(title="positive pairs with similarity below 0.5", ylabel="share of positive pairs")
    return _save(fig, out)


def collapse_curves(records: list[dict], out: Path, run_name: str, proj_dim: int) -> Path | None:
    """At the kNN epochs: RankMe of the backbone features (left) and the std of the normalised projections against
    1/sqrt(D) (right), each with its collapse threshold (monitoring.collapse)."""
    rows = [r for r in records if isinstance(r.get(RANKME), (int, float))]
    if not rows:
        return None
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    ep = [r[EPOCH] for r in rows]
    healthy = 1 / math.sqrt(max(proj_dim, 1))
    left.plot(ep, [r[RANKME] for r in rows], marker="o", label="RankMe")
    left.axhline(RANKME_COLLAPSED, color=NEG, linestyle="--", label="collapse threshold")
    right.plot(ep, [r.get(PROJ_STD) for r in rows], marker="o", label="proj_std")
    right.axhline(healthy, color="grey", linestyle=":", label=f"1/sqrt(D), D = {proj_dim}")
    right.axhline(PROJ_STD_COLLAPSED * healthy, color=NEG, linestyle="--", label="collapse threshold")
    left.set(title=f"{run_name}: effective rank of the features", xlabel="epoch", ylabel="RankMe")
    right.set(title="std of the normalised projections", xlabel="epoch", ylabel="mean per-dimension std")
    for ax in (left, right):
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, out)


def histogram(pos: np.ndarray, neg: np.ndarray, bins: np.ndarray, out: Path, *, title: str, xlabel: str,
              pos_label: str, neg_label: str, logx: bool = False) -> Path:
    fig, ax = _figure(title, xlabel, "density")
    ax.hist(neg, bins=bins, density=True, alpha=0.55, color=NEG, label=f"{neg_label} (n={len(neg):,})")
    ax.hist(pos, bins=bins, density=True, alpha=0.55, color=POS, label=f"{pos_label} (n={len(pos):,})")
    for values, colour in ((neg, NEG), (pos, POS)):
        ax.axvline(float(np.median(values)), color=colour, linestyle="--", linewidth=1)
    if logx:
        ax.set_xscale("log")
    ax.legend(fontsize=9)
    return _save(fig, out)


def sim_bins(a: np.ndarray, b: np.ndarray, count: int) -> np.ndarray:
    """Bins over the range the similarities occupy (within [-1, 1]), so a narrow cluster is resolved."""
    lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
    pad = max(0.02, 0.05 * (hi - lo))
    return np.linspace(max(-1.0, lo - pad), min(1.0, hi + pad), count + 1)


def tau_bins(a: np.ndarray, b: np.ndarray, count: int) -> tuple[np.ndarray, bool]:
    lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
    if hi <= lo:
        return np.linspace(lo - 1e-3, hi + 1e-3, count + 1), False
    if lo > 0 and hi / lo > 20:
        return np.geomspace(lo, hi, count + 1), True
    return np.linspace(lo, hi, count + 1), False


# ------------------------------------------------------------------------------------------------------ main

def curve_figures(records: list[dict], out_dir: Path, name: str, cfg) -> list[Path]:
    """The per-epoch curves of metrics.jsonl (those it has records for)."""
    written = [p for p in (
        curve(records, LOSS, EPOCH, out_dir / "loss.png", title=f"{name}: training loss",
              ylabel="mean loss over the epoch", label="training loss"),
        curve(records, LR, STEP, out_dir / "lr.png", title=f"{name}: learning rate",
              ylabel="learning rate (end of epoch)", label="learning rate"),
        curve(records, KNN_TOP1, EPOCH, out_dir / "knn.png", title=f"{name}: kNN monitor",
              ylabel="kNN top-1 accuracy (%)", label=f"kNN top-1 (k={cfg.eval.knn_k}, t={cfg.eval.knn_t})"),
        tau_curves(records, out_dir / "tau_curves.png", name),
        tau_health_curves(records, out_dir / "tau_health.png", name),
        separation_curves(records, out_dir / "separation.png", name),
        collapse_curves(records, out_dir / "collapse.png", name, cfg.model.proj_dim),
        curve(records, ONLINE_LINEAR_TOP1, EPOCH, out_dir / "online_linear.png", title=f"{name}: online probe",
              ylabel="online linear top-1 (%)", label="online linear probe, validation top-1"),
    ) if p is not None]
    if not any(p.name == "knn.png" for p in written):
        warn("plots: no kNN records in metrics.jsonl (eval.knn_every=0 or no val set): knn.png not written")
    return written


def pair_figures(pairs: dict, out_dir: Path, name: str, *, images: int, epoch: int, augs: str, bins: int) -> list[Path]:
    """Per head: the similarity histogram of positive vs negative pairs and (AMCL) their temperatures."""
    written = []
    for c, (sp, sn) in enumerate(zip(pairs["sim_pos"], pairs["sim_neg"])):
        sb = sim_bins(sp, sn, bins)
        written.append(histogram(
            sp, sn, sb, out_dir / f"similarity_head{c}.png",
            title=f"{name}, head {c}: pair similarity (dashed: medians)\n"
                  f"{images} validation images, augs '{augs}', epoch {epoch}; overlap {overlap(sp, sn, sb):.2f}",
            xlabel="cosine similarity of the two projections", pos_label="positive pairs (two views of one image)",
            neg_label="negative pairs (different images)"))
    if pairs["tau_pos"] is None:
        return written
    labels = {"views": ("positive pairs", "negative pairs"),
              "predictor": ("positive pairs (p, partner z)", "other pairs (not in the loss)"),
              "channels": ("same-channel pairs (diagonal)", "cross-channel pairs (off-diagonal)")}[pairs["tau_kind"]]
    for c, (tp, tn) in enumerate(zip(pairs["tau_pos"], pairs["tau_neg"])):
        tb, logx = tau_bins(tp, tn, bins)
        written.append(histogram(
            tp, tn, tb, out_dir / f"temperature_head{c}.png",
            title=f"{name}, head {c}: learned temperatures (dashed: medians)\n"
                  f"median τ+ {np.median(tp):.3g}, median τ- {np.median(tn):.3g} (epoch {epoch})",
            xlabel="temperature τ" + (" (log scale)" if logx else ""), pos_label=labels[0],
            neg_label=labels[1], logx=logx))
    return written


def make_plots(run: str, out: str, *, batch_size: int = 256, device: str = "auto", val_dataset: str = "",
               bins: int = 60, num_workers: int = -1, seed: int = 0, augs: str = "") -> list[Path]:
    """Write every figure for the run folder `run` into `out`; returns the written paths."""
    run_dir, out_dir = Path(run), Path(out)
    check(batch_size >= 2, f"--batch-size {batch_size}: similarity histograms need at least 2 images")
    check(bins >= 2, f"--bins {bins}: use at least 2 bins")
    check(not out_dir.is_file(), f"--out {out_dir} is a file: give a folder for the PNGs")
    records = run_records(run_dir)
    dev = dist.pick_device(device)
    model, cfg, ckpt, state = load_run(run_dir, dev)
    val = val_dataset or cfg.data.val_dataset
    if not val:
        val = cfg.data.train_dataset
        warn(f"plots: the run has no data.val_dataset; using {val} (or pass --val-dataset)")
    check(Path(val).is_file(), f"validation dataset {val} (from the checkpoint's config) not found: pass "
                               f"--val-dataset=path/to/val.beton")
    n = getattr(model.criterion, "batch_size", batch_size)  # Barlow Twins-AMCL: phi_b needs this exact batch
    view_a, view_b = validation_views(cfg, val, n, dev, num_workers if num_workers > 0 else cfg.data.num_workers,
                                      seed, augs)
    pairs = head_pairs(model, view_a, view_b)
    with user_io(out_dir, "creating"):
        out_dir.mkdir(parents=True, exist_ok=True)
    name = f"{cfg.model.method}{'-AMCL' if cfg.model.amcl else ''} ({run_dir.name})"
    written = curve_figures(records, out_dir, name, cfg) + pair_figures(
        pairs, out_dir, name, images=view_a.shape[0], epoch=int(state["epoch"]), augs=augs or cfg.data.augs, bins=bins)
    print(f"plots: {len(written)} figures from {ckpt.name} in {out_dir}", flush=True)
    for p in written:
        print(f"  {p}", flush=True)
    return written


@cli
def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="ffcv-amcl-plots", description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="run folder (the training run's logging.folder)")
    ap.add_argument("--out", required=True, help="folder for the PNGs (created)")
    ap.add_argument("--batch-size", type=int, default=256, help="validation images for the histograms")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--val-dataset", default="", help="validation .beton (default: the run's data.val_dataset)")
    ap.add_argument("--bins", type=int, default=60, help="histogram bins")
    ap.add_argument("--num-workers", type=int, default=-1, help="loader threads (default: the run's)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the two augmented views")
    ap.add_argument("--augs", default="", help="augmentation letters for the views (default: the run's own)")
    a = ap.parse_args(argv)
    make_plots(a.run, a.out, batch_size=a.batch_size, device=a.device, val_dataset=a.val_dataset, bins=a.bins,
               num_workers=a.num_workers, seed=a.seed, augs=a.augs)
    return 0


if __name__ == "__main__":
    main()
