"""The comparison's figures, drawn from results.json alone:

  compare.png  per dataset, the metric's mean over seeds with sample-std error bars, one series per variant over the
               grid points (or one point per variant without a grid); a second row with the final pair overlap when
               the runs have it and it is not the metric already;
  curves.png   per dataset (and grid point), the metric over the epochs: the mean over seeds and the min-max band.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np

from ffcv_amcl.atomic import atomic_path
from ffcv_amcl.monitoring.names import POS_NEG_OVERLAP

matplotlib.use("Agg")
COMPARE_FILE, CURVES_FILE = "compare.png", "curves.png"


def save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def series(rows: list[dict]) -> tuple[list[str], dict]:
    """(x labels: the grid points, or the variants without a grid; {series name: rows in x order})."""
    with_points = any(r["variant"] is not None and r["point"] for r in rows)
    if not with_points:
        return [r["arm"] for r in rows], {"": rows}
    points = list(dict.fromkeys(r["point"] for r in rows))
    out: dict = {}
    for r in rows:
        out.setdefault(r["variant"], []).append(r)
    return points, out


def draw_means(ax, rows: list[dict], value, spread, ylabel: str) -> None:
    labels, lines = series(rows)
    width = min(0.15, 0.8 / max(len(lines), 1))          # side by side at a point, so error bars do not overlap
    for i, (name, part) in enumerate(lines.items()):
        x = [labels.index(r["point"] if name else r["arm"]) + (i - (len(lines) - 1) / 2) * width for r in part]
        y = [value(r) if value(r) is not None else np.nan for r in part]
        err = [spread(r) or 0.0 for r in part]
        ax.errorbar(x, y, yerr=err, fmt="o-" if name and len(part) > 1 else "o", capsize=3, label=name or None)
    ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 3 else 0, ha="right" if len(labels) > 3
                  else "center", fontsize=8)
    ax.set_xlim(-0.5, len(labels) - 0.5)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if any(lines):
        ax.legend(fontsize=7)


def compare_figure(results: dict, out: Path) -> Path | None:
    import matplotlib.pyplot as plt

    rows = [r for r in results["rows"] if r["mean"] is not None]
    if not rows:
        return None
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    with_overlap = results["metric"] != POS_NEG_OVERLAP and any(r["overlap"] is not None for r in rows)
    nrows = 2 if with_overlap else 1
    fig, axes = plt.subplots(nrows, len(datasets), figsize=(5.5 * len(datasets), 3.8 * nrows), squeeze=False)
    for j, dataset in enumerate(datasets):
        part = [r for r in rows if r["dataset"] == dataset]
        draw_means(axes[0][j], part, lambda r: r["mean"], lambda r: r["std"],
                   f"{results['metric']} (mean ± std over seeds)")
        axes[0][j].set_title(dataset)
        if with_overlap:
            draw_means(axes[1][j], part, lambda r: r["overlap"], lambda r: None,
                       "final positive/negative overlap (mean over heads)")
    return save(fig, out / COMPARE_FILE)


def curves_figure(results: dict, out: Path) -> Path | None:
    """The metric over epochs per (dataset, point): per variant the mean over seeds and the min-max band."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    runs = [r for r in results["runs"] if r["curve"]]
    if not runs:
        return None
    panels: dict = {}
    for r in runs:
        panels.setdefault((r["dataset"], r["point"] if r["variant"] is not None else None), {}) \
              .setdefault(r["variant"] if r["variant"] is not None else r["arm"], []).append(r["curve"])
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 3.8 * rows), squeeze=False)
    for ax, ((dataset, point), lines) in zip(axes.flat, panels.items()):
        for name, curves in lines.items():
            epochs = sorted({e for c in curves for e, _ in c})
            at = [[dict(map(tuple, c)).get(e) for c in curves] for e in epochs]
            mean = [np.mean([v for v in vs if v is not None]) for vs in at]
            low = [min(v for v in vs if v is not None) for vs in at]
            high = [max(v for v in vs if v is not None) for vs in at]
            ax.plot(epochs, mean, marker="o" if len(epochs) < 30 else None, label=name)
            ax.fill_between(epochs, low, high, alpha=0.2)
        ax.set(title=dataset + (f", {point}" if point else ""), xlabel="epoch", ylabel=results["metric"])
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    return save(fig, out / CURVES_FILE)


def write_figures(results: dict, out: Path) -> list[Path]:
    return [p for p in (compare_figure(results, out), curves_figure(results, out)) if p is not None]
