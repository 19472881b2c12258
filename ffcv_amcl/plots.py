"""Diagnostic plots of a training run: the curves, and what the heads and the temperature network learned.

    python -m ffcv_amcl.plots --run RUN_FOLDER --out DIR [--batch-size 256] [--device auto] [--augs abcde]

From `metrics.jsonl`: loss.png, lr.png, knn.png (when the kNN monitor ran) and tau_curves.png (AMCL's
mean temperatures per head and epoch). From the newest checkpoint and the config stored in it, on one
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

import argparse
import json
import math
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F

from ffcv_amcl import distributed as dist
from ffcv_amcl.atomic import atomic_path
from ffcv_amcl.checkpoint import config_mismatch, find_latest
from ffcv_amcl.config import from_flat
from ffcv_amcl.errors import UserError, check, cli
from ffcv_amcl.losses.temperature import pair_tau
from ffcv_amcl.model.ssl import build_model

matplotlib.use("Agg")  # files only, no display
POS, NEG = "#1f77b4", "#d62728"


# ---------------------------------------------------------------------------------------------------- inputs

def read_metrics(run: Path) -> list[dict]:
    """The epoch records of metrics.jsonl; UserError when the folder or the log is missing or corrupt."""
    check(run.is_dir(), f"run folder {run} not found: pass the logging.folder of a training run to --run")
    path = run / "metrics.jsonl"
    check(path.is_file(), f"run folder {run} has no metrics.jsonl: point --run at a folder written by "
                          f"ffcv-amcl-train (its logging.folder)")
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise UserError(f"{path} line {n} is not JSON: the file is damaged; re-run training or delete the line")
        check(isinstance(record, dict) and "epoch" in record,
              f"{path} line {n} is not an epoch record: the file was not written by ffcv-amcl-train")
        records.append(record)
    check(bool(records), f"{path} is empty: train for at least one epoch first")
    return records


def load_run(run: Path, device: torch.device):
    """(model in eval mode with the newest checkpoint's weights, its config, the checkpoint path, state)."""
    found = find_latest(run, warn=lambda msg: print(msg, flush=True))
    check(found is not None, f"run folder {run} holds no loadable checkpoint (ckpt_e*_s*.pt): train until one "
                             f"is saved (training.checkpoint_every, or the end of the run)")
    path, state = found
    saved = dict(state["config"])
    cfg_json = run / "config.json"
    if cfg_json.is_file():
        try:
            folder_cfg = json.loads(cfg_json.read_text())
        except ValueError:
            raise UserError(f"{cfg_json} is not JSON: the file is damaged; restore it or delete it")
        diff = config_mismatch(saved, folder_cfg)
        if diff:
            raise UserError(f"checkpoint {path} does not match {cfg_json} ({diff}): the folder mixes two runs; "
                            f"move the checkpoint to its own run folder")
    try:
        cfg = from_flat(saved)
        model = build_model(cfg, global_batch=cfg.training.batch_size * int(state.get("world_size", 1)),
                            device=device)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"checkpoint {path} stores a config this version cannot rebuild ({exc}): plot it with "
                        f"the version that wrote it")
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as exc:
        raise UserError(f"checkpoint {path} does not match the model its config describes "
                        f"({str(exc).splitlines()[0][:120]}): it was edited or written by another version")
    return model.eval(), cfg, path, state


def validation_views(cfg, path: str, batch_size: int, device: torch.device, num_workers: int, seed: int,
                     augs: str = ""):
    """One batch of two augmented views of the first images of `path`, with the run's augmentations
    (or `augs`, to see how the trained heads separate pairs under other augmentations)."""
    from ffcv_amcl.config import beton_samples
    from ffcv_amcl.data.loader import make_ssl_loader

    n = beton_samples(path, "validation dataset")
    check(n >= 2, f"{path} holds {n} image(s): similarity histograms need at least 2")
    d = cfg.data
    loader = make_ssl_loader(path, min(batch_size, n), augs=augs or d.augs, image_size=d.image_size,
                             num_workers=num_workers, device=device, seed=seed, color_strength=d.color_strength,
                             drop_last=True, crop_scale=tuple(d.crop_scale),
                             augs_b=None if augs else (d.augs_b or None),
                             order="sequential")
    view_a, view_b, _ = next(iter(loader))
    return view_a, view_b


# ------------------------------------------------------------------------------------------------- pair sets

def pair_masks(n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Over the 2n x 2n pairs of [views a; views b]: positives (i, i+n) and negatives (different images),
    each unordered pair once."""
    idx = torch.arange(2 * n, device=device)
    upper = idx[:, None] < idx[None, :]
    same_image = (idx[:, None] % n) == (idx[None, :] % n)
    return upper & same_image, upper & ~same_image


@torch.no_grad()
def head_pairs(model, view_a, view_b) -> dict:
    """Per head: cosine similarities of positive and negative pairs, and (AMCL) their temperatures."""
    n = view_a.shape[0]
    x = torch.cat([view_a, view_b])
    z = model.projector(model.backbone(x)).float()                  # (C, 2n, D)
    zn = F.normalize(z, dim=-1)
    pos, neg = pair_masks(n, x.device)
    sim = torch.einsum("cid,cjd->cij", zn, zn)
    out = {"sim_pos": [s[pos].cpu().numpy() for s in sim], "sim_neg": [s[neg].cpu().numpy() for s in sim],
           "tau_pos": None, "tau_neg": None, "tau_kind": None}
    crit = getattr(model, "criterion", None)
    if crit is None:
        return out
    lo, hi = crit.tau_min, crit.tau_max
    if hasattr(crit, "phi_b"):                                      # Barlow Twins: channel-vector pairs
        if n != crit.batch_size:
            print(f"plots: temperature histograms skipped: Barlow Twins-AMCL's temperature network takes batches "
                  f"of exactly {crit.batch_size} and the validation batch has {n} images", flush=True)
            return out
        za, zb = z[:, :n], z[:, n:]
        logit = torch.einsum("clb,cmb->clm", crit.phi_b(za.transpose(1, 2)), crit.phi_b(zb.transpose(1, 2)))
        tau = pair_tau(logit, lo, hi)
        eye = torch.eye(tau.shape[-1], dtype=torch.bool, device=tau.device)
        out.update(tau_pos=[t[eye].cpu().numpy() for t in tau], tau_neg=[t[~eye].cpu().numpy() for t in tau],
                   tau_kind="channels")
        return out
    if hasattr(model, "predictor"):                                 # SimSiam / BYOL: tau(p, partner z)
        p = F.normalize(model.predictor(z).float(), dim=-1)
        if hasattr(model, "target_projector"):
            partner = model.target_projector(model.target_backbone(x)).float()
        else:
            partner = z
        partner = F.normalize(partner.roll(n, 1), dim=-1)           # p of view a pairs with z of view b
        a = torch.einsum("cid,cjd->cij", crit.phi(p), crit.phi(partner))
        tau = pair_tau(a, lo, hi)
        diag = torch.eye(2 * n, dtype=torch.bool, device=x.device)
        out.update(tau_pos=[t[diag].cpu().numpy() for t in tau], tau_neg=[t[~diag].cpu().numpy() for t in tau],
                   tau_kind="predictor")
        return out
    ph = crit.phi(zn)                                               # SimCLR / MoCo: phi once per view
    tau = pair_tau(torch.einsum("cid,cjd->cij", ph, ph), lo, hi)
    out.update(tau_pos=[t[pos].cpu().numpy() for t in tau], tau_neg=[t[neg].cpu().numpy() for t in tau],
               tau_kind="views")
    return out


def overlap(a: np.ndarray, b: np.ndarray, bins: np.ndarray) -> float:
    """Overlap coefficient of two samples' histograms: the integral of min(density_a, density_b), 0..1."""
    ha, _ = np.histogram(a, bins=bins, density=True)
    hb, _ = np.histogram(b, bins=bins, density=True)
    return float(np.sum(np.minimum(ha, hb) * np.diff(bins)))


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
    heads = sorted({int(k[len("tau_pos_head"):]) for r in records for k in r if k.startswith("tau_pos_head")})
    if not heads:
        return None
    fig, ax = _figure(f"{run_name}: mean learned temperature per head", "epoch", "mean temperature τ over the epoch")
    for c in heads:
        for kind, style in (("pos", "-"), ("neg", "--")):
            pts = [(r["epoch"], r[f"tau_{kind}_head{c}"]) for r in records
                   if isinstance(r.get(f"tau_{kind}_head{c}"), (int, float)) and math.isfinite(r[f"tau_{kind}_head{c}"])]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, style, marker="o" if len(xs) < 30 else None, color=f"C{c}",
                        label=f"head {c}, {'positive' if kind == 'pos' else 'negative'} pairs")
    values = [v for line in ax.get_lines() for v in line.get_ydata()]
    if min(values) > 0 and max(values) / min(values) > 10:
        ax.set_yscale("log")
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

def make_plots(run: str, out: str, *, batch_size: int = 256, device: str = "auto", val_dataset: str = "",
               bins: int = 60, num_workers: int = -1, seed: int = 0, augs: str = "") -> list[Path]:
    """Write every figure for the run folder `run` into `out`; returns the written paths."""
    run_dir, out_dir = Path(run), Path(out)
    check(batch_size >= 2, f"--batch-size {batch_size}: similarity histograms need at least 2 images")
    check(bins >= 2, f"--bins {bins}: use at least 2 bins")
    check(not out_dir.is_file(), f"--out {out_dir} is a file: give a folder for the PNGs")
    records = read_metrics(run_dir)
    dev = dist.pick_device(device)
    model, cfg, ckpt, state = load_run(run_dir, dev)
    val = val_dataset or cfg.data.val_dataset
    if not val:
        val = cfg.data.train_dataset
        print(f"plots: the run has no data.val_dataset; using {val} (or pass --val-dataset)", flush=True)
    check(Path(val).is_file(), f"validation dataset {val} (from the checkpoint's config) not found: pass "
                               f"--val-dataset=path/to/val.beton")
    n = batch_size
    crit = getattr(model, "criterion", None)
    if crit is not None and hasattr(crit, "phi_b"):
        n = crit.batch_size                                 # Barlow Twins-AMCL: phi_b needs this exact batch
    view_a, view_b = validation_views(cfg, val, n, dev, num_workers if num_workers > 0 else cfg.data.num_workers,
                                      seed, augs)
    augs = augs or cfg.data.augs
    pairs = head_pairs(model, view_a, view_b)

    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"{cfg.model.method}{'-AMCL' if cfg.model.amcl else ''} ({run_dir.name})"
    written = [p for p in (
        curve(records, "loss", "epoch", out_dir / "loss.png", title=f"{name}: training loss",
              ylabel="mean loss over the epoch", label="training loss"),
        curve(records, "lr", "step", out_dir / "lr.png", title=f"{name}: learning rate",
              ylabel="learning rate (end of epoch)", label="learning rate"),
        curve(records, "knn_top1", "epoch", out_dir / "knn.png", title=f"{name}: kNN monitor",
              ylabel="kNN top-1 accuracy (%)", label=f"kNN top-1 (k={cfg.eval.knn_k}, t={cfg.eval.knn_t})"),
        tau_curves(records, out_dir / "tau_curves.png", name),
    ) if p is not None]
    if not any(p.name == "knn.png" for p in written):
        print("plots: no kNN records in metrics.jsonl (eval.knn_every=0 or no val set): knn.png not written",
              flush=True)

    images, epoch = view_a.shape[0], int(state["epoch"])
    for c, (sp, sn) in enumerate(zip(pairs["sim_pos"], pairs["sim_neg"])):
        sb = sim_bins(sp, sn, bins)
        ov = overlap(sp, sn, sb)
        written.append(histogram(
            sp, sn, sb, out_dir / f"similarity_head{c}.png",
            title=f"{name}, head {c}: pair similarity (dashed: medians)\n"
                  f"{images} validation images, augs '{augs}', epoch {epoch}; overlap {ov:.2f}",
            xlabel="cosine similarity of the two projections", pos_label="positive pairs (two views of one image)",
            neg_label="negative pairs (different images)"))
    if pairs["tau_pos"] is not None:
        kind = pairs["tau_kind"]
        labels = {"views": ("positive pairs", "negative pairs"),
                  "predictor": ("positive pairs (p, partner z)", "other pairs (not in the loss)"),
                  "channels": ("same-channel pairs (diagonal)", "cross-channel pairs (off-diagonal)")}[kind]
        for c, (tp, tn) in enumerate(zip(pairs["tau_pos"], pairs["tau_neg"])):
            tb, logx = tau_bins(tp, tn, bins)
            written.append(histogram(
                tp, tn, tb, out_dir / f"temperature_head{c}.png",
                title=f"{name}, head {c}: learned temperatures (dashed: medians)\n"
                      f"median τ+ {np.median(tp):.3g}, median τ- {np.median(tn):.3g} (epoch {epoch})",
                xlabel="temperature τ" + (" (log scale)" if logx else ""), pos_label=labels[0],
                neg_label=labels[1], logx=logx))
    print(f"plots: {len(written)} figures from {ckpt.name} in {out_dir}", flush=True)
    for p in written:
        print(f"  {p}", flush=True)
    return written


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage dump
        raise UserError(f"{message} (see --help)")


@cli
def main(argv: list[str] | None = None) -> int:
    ap = _Parser(prog="ffcv-amcl-plots", description=__doc__.split("\n\n")[0])
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
