"""A comparison plan: read it, expand it into runs, resolve and check every run before the first one starts.

A plan is YAML (every key but `variants` or `grid` optional):

    base: rn_configs/digits_quickstart.yaml      # training config(s) every run starts from (a path or a list)
    set: {training.epochs: 20}                   # settings for every run
    datasets:                                    # name -> .beton files (and settings of that dataset's runs)
      fashion: {train: runs/data/fashion_train.beton, val: runs/data/fashion_test.beton, set: {data.augs: acde}}
    seeds: [0, 1, 2]
    metric: knn_top1                             # a field of each run's final metrics.jsonl record
    baseline: simclr_t0.2                        # the variant the others are compared with, or {method: variant}
    variants:                                    # name -> settings
      simclr_t0.2: {model.amcl: 0, model.heads: 1, loss.temperature: 0.2}
    grid:                                        # axes: every variant runs at every point of their product
      data.augs: [a, acde]

Settings are the trainer's (`section.param`, nested maps work too); later ones win: base, `set`, the dataset's `set`,
the variant, the grid point. The command owns training.seed (from `seeds`), logging.folder
(OUT/<dataset>/<variant>/seed<k>), training.resume (auto) and, when `datasets` is given, the data files. An arm is a
variant at a grid point, named `variant@point` (`variant` without a grid, `point` without variants); a point is named
from its values (`augs-acde`), folder-safe. Without `datasets` the one dataset is named after its training file.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path

from ffcv_amcl.errors import UserError, check

PLAN_KEYS = ("base", "set", "datasets", "seeds", "metric", "baseline", "variants", "grid")
DATASET_KEYS = ("train", "val", "set")
DATA_FILES = {"train": "data.train_dataset", "val": "data.val_dataset"}
OWNED = {"training.seed": "the plan's `seeds` (or --seeds)",
         "logging.folder": "the command (OUT/<dataset>/<variant>/seed<k>)",
         "training.resume": "the command (auto: a run resumes where it stopped)",
         "training.overwrite": "the command (a run folder is never deleted)"}
DEFAULT_METRIC = "knn_top1"
ARM_SEPARATOR = "@"


@dataclass(frozen=True)
class Dataset:
    name: str
    settings: dict          # data files and the dataset's own settings


@dataclass(frozen=True)
class Arm:
    """A variant at a grid point: the unit a table row describes (over seeds)."""

    variant: str | None
    point: str | None
    settings: dict

    @property
    def name(self) -> str:
        return ARM_SEPARATOR.join(p for p in (self.variant, self.point) if p is not None)

    @property
    def key(self) -> str:
        """What a baseline names: the variant (the point when the plan has no variants)."""
        return self.variant if self.variant is not None else self.point


@dataclass
class Plan:
    path: str
    base: list[str]
    settings: dict
    datasets: list[Dataset]
    seeds: list[int]
    metric: str
    baseline: str | dict | None
    arms: list[Arm]
    grid_keys: list[str] = field(default_factory=list)


def folder_safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "-", text).strip("-") or "-"


def load_yaml(path: str) -> dict:
    import yaml

    p = Path(path)
    check(p.is_file(), f"plan {path} not found: give the path of a plan YAML (rn_configs/compare/ has examples)")
    try:
        tree = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"plan {path} is not valid YAML ({str(exc).splitlines()[0]})")
    check(isinstance(tree, dict), f"plan {path} must be a mapping of {', '.join(PLAN_KEYS)}")
    return tree


def known_keys(tree: dict, allowed, where: str) -> None:
    unknown = [k for k in tree if k not in allowed]
    check(not unknown, f"unknown key '{unknown[0] if unknown else ''}' in {where}: the keys are {', '.join(allowed)}")


def settings_of(value, where: str) -> dict:
    """Flat {section.param: value} of a settings map (dotted keys or nested sections), every name a setting of
    the trainer's that the plan may set."""
    from ffcv_amcl.config import flatten_settings, setting_names

    if value is None:
        return {}
    check(isinstance(value, dict), f"{where} must map settings to values ({{section.param: value}})")
    flat = flatten_settings(value)
    known = set(setting_names())
    for key in flat:
        check(key in known, f"{where}: unknown setting '{key}': check the spelling (python -m ffcv_amcl.train "
                            f"--help lists every setting)")
        check(key not in OWNED, f"{where} sets {key}, which {OWNED.get(key)} decides: remove it from the plan")
    return flat


def read_plan(path: str) -> Plan:
    """The plan at `path`, its keys and names checked (the settings are checked by `resolve_runs`)."""
    tree = load_yaml(path)
    known_keys(tree, PLAN_KEYS, f"plan {path}")
    check(tree.get("variants") or tree.get("grid"), f"plan {path} has neither variants nor grid: add at least one "
                                                    f"(variants: {{name: {{section.param: value}}}})")
    base = tree.get("base") or []
    base = [base] if isinstance(base, str) else base
    check(isinstance(base, list) and all(isinstance(b, str) for b in base),
          f"plan {path}: base must be a config path or a list of them")
    seeds = tree.get("seeds", [0])
    check(isinstance(seeds, list) and seeds and all(isinstance(s, int) and s >= 0 for s in seeds),
          f"plan {path}: seeds must be a list of integers >= 0, e.g. [0, 1, 2]")
    metric = tree.get("metric", DEFAULT_METRIC)
    check(isinstance(metric, str) and metric, f"plan {path}: metric must be a metrics.jsonl field, e.g. knn_top1")
    arms, grid_keys = read_arms(tree, path)
    plan = Plan(path, base, settings_of(tree.get("set"), f"plan {path} `set`"), read_datasets(tree, path),
                sorted(set(seeds), key=seeds.index), metric, tree.get("baseline"), arms, grid_keys)
    check_baseline(plan)
    return plan


def read_datasets(tree: dict, path: str) -> list[Dataset]:
    given = tree.get("datasets")
    if given is None:
        return []
    check(isinstance(given, dict) and given, f"plan {path}: datasets must map names to {{train: ..., val: ...}}")
    out = []
    for name, entry in given.items():
        where = f"plan {path}, dataset {name}"
        check(folder_safe(str(name)) == str(name), f"{where}: use letters, digits, '.', '_' or '-' in its name")
        check(isinstance(entry, dict) and "train" in entry, f"{where} needs train: path/to/train.beton")
        known_keys(entry, DATASET_KEYS, where)
        own = settings_of(entry.get("set"), f"{where} `set`")
        check(not set(own) & set(DATA_FILES.values()), f"{where} `set` names a data file: use its train/val keys")
        files = {DATA_FILES[k]: str(entry[k]) for k in DATA_FILES if entry.get(k) is not None}
        out.append(Dataset(str(name), {**own, **files}))
    return out


def read_arms(tree: dict, path: str) -> tuple[list[Arm], list[str]]:
    variants = tree.get("variants") or {}
    check(isinstance(variants, dict), f"plan {path}: variants must map names to settings")
    for name in variants:
        check(isinstance(name, str) and folder_safe(name) == name and ARM_SEPARATOR not in name,
              f"plan {path}: variant name {name!r}: use letters, digits, '.', '_' or '-'")
    named = {name: settings_of(s, f"plan {path}, variant {name}") for name, s in variants.items()}
    points = grid_points(tree.get("grid"), path)
    if not named:
        return [Arm(None, p, s) for p, s in points], grid_keys_of(tree)
    if not points:
        return [Arm(v, None, s) for v, s in named.items()], []
    return [Arm(v, p, {**vs, **ps}) for p, ps in points for v, vs in named.items()], grid_keys_of(tree)


def grid_keys_of(tree: dict) -> list[str]:
    return list(settings_of(tree.get("grid"), "grid")) if tree.get("grid") else []


def grid_points(grid, path: str) -> list[tuple[str, dict]]:
    """[(point name, settings)] of the product of the grid's axes, in the order the plan lists them."""
    if not grid:
        return []
    axes = settings_of(grid, f"plan {path} `grid`")
    for key, values in axes.items():
        check(isinstance(values, list) and values, f"plan {path}, grid {key}: give a list of values, e.g. [0, 1]")
    short = [k.split(".")[-1] for k in axes]
    labels = [s if short.count(s) == 1 else k for s, k in zip(short, axes)]
    points = []
    for combo in itertools.product(*axes.values()):
        name = "_".join(folder_safe(f"{label}-{plain(v)}") for label, v in zip(labels, combo))
        points.append((name, dict(zip(axes, combo))))
    names = [n for n, _ in points]
    dup = next((n for n in names if names.count(n) > 1), None)
    check(dup is None, f"plan {path}: two grid points are both named {dup}: make the grid's values distinct")
    return points


def plain(value) -> str:
    """A setting's value as the trainer's command line takes it."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return ",".join(plain(v) for v in value)
    return str(value)


def check_baseline(plan: Plan) -> None:
    from ffcv_amcl.model.methods import METHODS

    keys = list(dict.fromkeys(a.key for a in plan.arms))
    what = "variant" if any(a.variant is not None for a in plan.arms) else "grid point"
    named = plan.baseline if isinstance(plan.baseline, dict) else {None: plan.baseline}
    if plan.baseline is None:
        return
    check(isinstance(plan.baseline, (str, dict)), f"plan {plan.path}: baseline must name a {what} or map methods "
                                                 f"to {what}s")
    for method, key in named.items():
        check(method is None or method in METHODS, f"plan {plan.path}: baseline names method {method!r}: use one "
                                                   f"of {', '.join(METHODS)}")
        check(key in keys, f"plan {plan.path}: baseline {key!r} is not a {what} of the plan ({', '.join(keys)})")


def dataset_name(train: str) -> str:
    """A dataset's name from its training file: runs/x/digits_train.beton -> digits."""
    stem = Path(train).name.removesuffix(".beton")
    return folder_safe(re.sub(r"[_-]train$", "", stem))
