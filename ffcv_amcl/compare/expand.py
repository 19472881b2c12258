"""A plan's runs: one per (dataset, arm, seed), each with its trainer settings resolved and checked by the
trainer's own validation (config.parse_config, data files included) before the first run starts, so a bad setting
anywhere is one line naming the variant, the dataset and the setting, and no folder is made."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ffcv_amcl.compare.plan import DATA_FILES, Arm, Dataset, Plan, dataset_name, plain
from ffcv_amcl.errors import UserError, check
from ffcv_amcl.monitoring.names import KNN_TOP1, ONLINE_LINEAR_TOP1


@dataclass(frozen=True)
class RunSpec:
    """One training of a comparison: where it runs, the trainer's settings, and those settings resolved."""

    dataset: str
    arm: Arm
    seed: int
    folder: Path
    argv: tuple[str, ...]       # the trainer's arguments: --config-file BASE ... --section.param=value
    flat: dict                  # every setting resolved (config.to_flat), as the run's config.json holds it

    @property
    def label(self) -> str:
        return f"{self.dataset} {self.arm.name} seed {self.seed}"


def datasets_of(plan: Plan) -> list[Dataset]:
    """The plan's datasets; without `datasets`, the one its base and `set` train on, named after its file."""
    if plan.datasets:
        return plan.datasets
    from ffcv_amcl.config import read_config_file

    merged = {}
    for path in plan.base:
        merged.update(read_config_file(path))
    merged.update(plan.settings)
    train = merged.get(DATA_FILES["train"])
    check(bool(train), f"plan {plan.path} names no training data: add datasets: {{name: {{train: ..., val: ...}}}} "
                       f"or set data.train_dataset")
    return [Dataset(dataset_name(str(train)), {})]


def select(plan: Plan, only: list[str] | None) -> tuple[list[Dataset], list[Arm]]:
    """The datasets and arms `--only` keeps: its names are dataset, variant, grid-point or arm names; each kind
    given narrows that kind, a kind not given keeps all."""
    datasets, arms = datasets_of(plan), plan.arms
    if not only:
        return datasets, arms
    kinds = {"dataset": {d.name for d in datasets}, "variant": {a.variant for a in arms} - {None},
             "point": {a.point for a in arms} - {None}, "arm": {a.name for a in arms}}
    unknown = [n for n in only if not any(n in names for names in kinds.values())]
    check(not unknown, f"--only {unknown[0] if unknown else ''}: not a dataset, variant or grid point of the plan "
                       f"(datasets {', '.join(sorted(kinds['dataset']))}; variants and points "
                       f"{', '.join(a.name for a in arms)})")
    given = {kind: set(only) & names for kind, names in kinds.items()}
    datasets = [d for d in datasets if not given["dataset"] or d.name in given["dataset"]]
    arms = [a for a in arms if (not given["variant"] or a.variant in given["variant"])
            and (not given["point"] or a.point in given["point"]) and (not given["arm"] or a.name in given["arm"])]
    return datasets, arms


def trainer_argv(plan: Plan, dataset: Dataset, arm: Arm, seed: int, folder: Path) -> tuple[str, ...]:
    settings = {**plan.settings, **dataset.settings, **arm.settings}
    return (*(a for path in plan.base for a in ("--config-file", path)),
            *(f"--{key}={plain(value)}" for key, value in settings.items()),
            f"--training.seed={seed}", f"--logging.folder={folder}", "--training.resume=auto")


def where(dataset: Dataset, arm: Arm, datasets: list[Dataset]) -> str:
    kind = "variant" if arm.variant is not None else "grid point"
    return f"{kind} {arm.name}" + (f" on dataset {dataset.name}" if len(datasets) > 1 else "")


def resolve_arm(plan: Plan, dataset: Dataset, arm: Arm, out: Path, *, world_size: int, check_files: bool,
                place: str) -> dict:
    """The resolved flat settings of the arm's first seed; UserError naming `place` and the setting."""
    from ffcv_amcl.config import parse_config, to_flat

    folder = out / dataset.name / arm.name / f"seed{plan.seeds[0]}"
    try:
        cfg, _ = parse_config(list(trainer_argv(plan, dataset, arm, plan.seeds[0], folder)), world_size=world_size,
                              check_files=check_files)
    except UserError as exc:
        raise UserError(f"plan {plan.path}, {place}: {exc}") from None
    metric_needs(plan.metric, cfg, f"plan {plan.path}, {place}")
    return to_flat(cfg)


def metric_needs(metric: str, cfg, place: str) -> None:
    """The monitors a plan's metric is read from must be on in every run."""
    val = bool(cfg.data.val_dataset)
    if metric == KNN_TOP1:
        check(cfg.eval.knn_every > 0 and val, f"{place}: the metric knn_top1 needs the kNN monitor: set "
                                              f"eval.knn_every >= 1 and a val .beton")
    if metric == ONLINE_LINEAR_TOP1:
        check(bool(cfg.eval.online_linear) and val, f"{place}: the metric online_linear_top1 needs the online "
                                                    f"probe: set eval.online_linear=1 and a val .beton")


def expand(plan: Plan, out: Path, *, only: list[str] | None = None, world_size: int = 1,
           check_files: bool = True) -> list[RunSpec]:
    """Every selected run of the plan, resolved and checked (UserError, one line, on the first bad one)."""
    datasets, arms = select(plan, only)
    check(bool(arms) and bool(datasets), f"--only {','.join(only or [])} selects no run of plan {plan.path}")
    runs = []
    for dataset in datasets:
        resolved = [resolve_arm(plan, dataset, arm, out, world_size=world_size, check_files=check_files,
                                place=where(dataset, arm, datasets)) for arm in arms]
        for seed in plan.seeds:             # seed by seed: the first seed of every variant is there first
            for arm, flat in zip(arms, resolved):
                folder = out / dataset.name / arm.name / f"seed{seed}"
                runs.append(RunSpec(dataset.name, arm, seed, folder, trainer_argv(plan, dataset, arm, seed, folder),
                                    {**flat, "training.seed": seed, "logging.folder": str(folder)}))
    return runs
