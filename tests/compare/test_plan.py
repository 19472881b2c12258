"""Reading and expanding plans: names made from grid values, variants x grid, baselines, --only, the shipped plans
(each one resolves with the trainer's own validation), and one line for each kind of mistake."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from ffcv_amcl.compare.expand import expand, select
from ffcv_amcl.compare.plan import read_plan
from ffcv_amcl.errors import UserError
from tests.train_helpers import REPO

PLANS = sorted((REPO / "rn_configs" / "compare").glob("*.yaml"))


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    return str(path)


BASE = "base: rn_configs/digits_quickstart.yaml\nset: {data.train_dataset: runs/x/digits_train.beton}\n"


def test_variants_times_grid_with_names_from_the_values(tmp_path):
    plan = read_plan(write(tmp_path, BASE + """\
variants: {one: {model.heads: 1}, three: {model.heads: 3}}
grid: {data.augs: [a, acde], loss.temperature: [0.1, 0.2], model.method: [simclr, moco]}
baseline: one
"""))
    names = [a.name for a in plan.arms]
    assert len(names) == 16 and names[:3] == ["one@augs-a_temperature-0.1_method-simclr",
                                              "three@augs-a_temperature-0.1_method-simclr",
                                              "one@augs-a_temperature-0.1_method-moco"]
    arm = plan.arms[1]
    assert arm.settings == {"model.heads": 3, "data.augs": "a", "loss.temperature": 0.1, "model.method": "simclr"}
    runs = expand(plan, tmp_path / "out", check_files=False)
    assert len(runs) == 16 and runs[0].dataset == "digits"
    assert runs[1].folder == tmp_path / "out" / "digits" / arm.name / "seed0"
    assert runs[1].flat["model.heads"] == 3 and runs[1].flat["loss.temperature"] == 0.1


def test_only_narrows_each_kind_it_names(tmp_path):
    plan = read_plan(write(tmp_path, """\
base: rn_configs/digits_quickstart.yaml
datasets: {a: {train: x_train.beton}, b: {train: y_train.beton, set: {data.augs: ae}}}
variants: {v1: {}, v2: {model.heads: 1}}
grid: {data.augs: [a, acd]}
"""))
    datasets, arms = select(plan, ["b", "v2"])
    assert [d.name for d in datasets] == ["b"] and [a.name for a in arms] == ["v2@augs-a", "v2@augs-acd"]
    assert [a.name for a in select(plan, ["augs-acd"])[1]] == ["v1@augs-acd", "v2@augs-acd"]
    runs = expand(plan, tmp_path, only=["b", "v1@augs-acd"], check_files=False)
    assert [r.flat["data.augs"] for r in runs] == ["acd"]          # the grid point wins over the dataset's set
    with pytest.raises(UserError, match="--only nope: not a dataset, variant or grid point"):
        select(plan, ["nope"])


@pytest.mark.parametrize("text, message", [
    ("variants: {a: {}}\nseed: [0]\n", "unknown key 'seed' in plan"),
    ("variants: {a: {model.hedas: 2}}\n", "variant a: unknown setting 'model.hedas'"),
    ("variants: {a: {training.seed: 2}}\n", "variant a sets training.seed, which the plan's `seeds`"),
    ("variants: {a: {}}\nbaseline: b\n", "baseline 'b' is not a variant of the plan"),
    ("variants: {a: {}}\nbaseline: {simclr: a, vicreg9: a}\n", "baseline names method 'vicreg9'"),
    ("grid: {model.heads: 3}\n", "grid model.heads: give a list of values"),
    ("set: {model.heads: 1}\n", "has neither variants nor grid"),
    ("variants: {a: {}}\ndatasets: {d: {val: v.beton}}\n", "dataset d needs train"),
])
def test_mistakes_are_one_line_naming_the_place(tmp_path, text, message):
    with pytest.raises(UserError, match=re.escape(message)):
        read_plan(write(tmp_path, BASE + text))


def test_a_bad_value_names_the_variant_and_dataset(tmp_path):
    plan = read_plan(write(tmp_path, """\
base: rn_configs/digits_quickstart.yaml
datasets: {a: {train: x_train.beton}, b: {train: y_train.beton}}
variants: {good: {}, bad: {loss.tau_min: 3}}
"""))
    with pytest.raises(UserError, match=r"variant bad on dataset a: loss.tau_min=3.0, loss.tau_max=2.0"):
        expand(plan, tmp_path, check_files=False)


@pytest.mark.parametrize("path", PLANS, ids=[p.name for p in PLANS])
def test_shipped_plans_resolve_and_name_their_command(path):
    text = path.read_text()
    assert f"python -m ffcv_amcl.compare rn_configs/compare/{path.name} --out" in text.split("\nbase:")[0]
    plan = read_plan(str(path.relative_to(REPO)))
    runs = expand(plan, Path("/tmp/unused"), check_files=False)
    assert runs and all(r.flat["eval.knn_every"] > 0 for r in runs)
    assert len({r.folder for r in runs}) == len(runs)


def test_methods_plan_covers_every_method_with_and_without_amcl():
    from ffcv_amcl.model.methods import METHODS

    plan = read_plan("rn_configs/compare/methods.yaml")
    runs = expand(plan, Path("/tmp/unused"), check_files=False)
    pairs = {(r.flat["model.method"], r.flat["model.amcl"]) for r in runs}
    for method, cls in METHODS.items():
        assert (method, 0) in pairs and ((method, 1) in pairs or cls.amcl_kind is None), method
        assert plan.baseline[method] in {a.name for a in plan.arms}
