"""The GPU run's script (benchmarks/gpu/run.sh) in its dry run: every stage on the CPU with tiny sizes, so the
script is known to work before device time is spent on it."""
import json
import os
import subprocess
import sys

import pytest

from tests.train_helpers import REPO

RUN = ["bash", "benchmarks/gpu/run.sh"]
VARIANTS = {"amcl-eager": False, "base-eager": False, "amcl-compiled": True, "base-compiled": True}


def run_script(*args, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("FFCV_AMCL_DEBUG", None)
    env.pop("OUT", None)
    return subprocess.run([*RUN, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.timeout(300)      # a guard against a hang, not a time limit: 65 s alone on 2 cores
def test_dry_run_runs_every_stage_and_writes_the_json_table_and_section(tmp_path):
    out = tmp_path / "out"
    r = run_script("--dry-run", "--out", str(out), "--python", sys.executable)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert sorted(os.listdir(out)) == ["BENCHMARKS.md", "gpu_run.json", "run.log"]
    run = json.loads((out / "gpu_run.json").read_text())

    assert list(run["stages"]) == ["data", "profile", "epochs", "report"]
    assert {s["status"] for s in run["stages"].values()} == {"ok"}
    assert run["env"]["dry_run"] and run["env"]["machine"]["device"] == "cpu"
    assert run["data"]["images"] == 32 and run["data"]["side"] == 32
    p = run["profile"]
    assert p["method"] == "simclr" and p["amcl"] and p["heads"] == 3 and p["loader_threads"] == 1
    assert p["bottleneck"] in ("loader", "model") and p["loss_ms"] > 0
    assert set(run["epochs"]) == set(VARIANTS)
    for name, compiled in VARIANTS.items():
        e = run["epochs"][name]
        assert e["epochs"] == 2 and e["steps_per_epoch"] == 2 and e["pairs_per_epoch"] == 32
        assert e["pairs_per_s"] > 0 and e["seconds_per_epoch"] > 0
        assert e["compiled"] is compiled, name                    # training.compile=1 reaches compile_model
    assert run["syncs"]["available"] is False and run["syncs"]["steps"] == 2    # trained; counted on CUDA only

    log = (out / "run.log").read_text()
    table = log[log.rindex("======== summary"):]
    assert "DRY RUN" in table and "SimCLR-AMCL C=3" in table and "bottleneck" in table
    section = (out / "BENCHMARKS.md").read_text()
    assert "<!-- section: gpu-run.cuda -->" in section and "DRY RUN on the CPU" in section


def test_tests_stage_reads_pytest_junit(tmp_path):
    """The tests stage's record (left out of the dry run, where every gpu test skips), from a JUnit file."""
    junit = tmp_path / "junit.xml"
    junit.write_text('<testsuites><testsuite name="pytest">'
                     '<testcase classname="tests.a" name="test_ok"/>'
                     '<testcase classname="tests.a" name="test_skip"><skipped message="no CUDA"/></testcase>'
                     '<testcase classname="tests.b" name="test_bad">'
                     '<failure message="AssertionError: loss not finite at step 3&#10;more"/>'
                     '</testcase></testsuite></testsuites>')
    out = tmp_path / "run.json"
    r = subprocess.run([sys.executable, "-m", "benchmarks.gpu.stages", "tests", "--json", str(out),
                        "--junit", str(junit), "--rc", "1"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    failure = "tests.b::test_bad: AssertionError: loss not finite at step 3"     # the message's first line
    assert json.loads(out.read_text())["tests"] == {"rc": 1, "passed": 1, "failed": 1, "skipped": 1,
                                                    "failures": [failure]}


def test_mistakes_end_with_one_line(tmp_path):
    r = run_script("--bogus")
    assert r.returncode == 2 and r.stderr.startswith("error: unknown argument '--bogus'") and r.stderr.count("\n") == 1
    r = run_script("--out", str(tmp_path), "--bundle", str(tmp_path / "absent"))
    assert r.returncode == 2 and "run bash benchmarks/gpu/prepare.sh" in r.stdout
    r = subprocess.run([sys.executable, "-m", "benchmarks.gpu.stages", "summary", str(tmp_path / "none.json")],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
