"""One place decides torch's CPU threads (training.threads): the loader's worker count never changes them, and so
never changes the weights."""
import os
import subprocess
import sys

import pytest
import torch

from ffcv_amcl import machine
from tests.train_helpers import REPO, digits_betons

QUICKSTART = REPO / "rn_configs" / "digits_quickstart.yaml"


@pytest.mark.slow
def test_worker_count_leaves_the_weights_bit_identical(tmp_path):
    """Same seed, 2 epochs of the quickstart config (its model, views and batch; kNN every epoch and the online
    probe, with their loaders) on 256 of its training images, with 1 and with 2 loader threads: the same weights,
    bit for bit."""
    pytest.importorskip("yaml")  # the quickstart config is YAML
    from ffcv_amcl.checkpoint import load_checkpoint
    from ffcv_amcl.train import run

    train, test = digits_betons(str(tmp_path), 256, 120)
    weights = {}
    for workers in (1, 2):
        out = run(["--config-file", str(QUICKSTART), f"--data.train_dataset={train}", f"--data.val_dataset={test}",
                   f"--data.num_workers={workers}", "--training.epochs=2", "--eval.knn_every=1",
                   "--training.resume=none", f"--logging.folder={tmp_path / str(workers)}"])
        weights[workers] = load_checkpoint(out["checkpoint"])["model"]
    assert weights[1].keys() == weights[2].keys()
    differ = [k for k in weights[1] if not torch.equal(weights[1][k], weights[2][k])]
    assert not differ, f"{len(differ)} of {len(weights[1])} tensors differ, e.g. {differ[:3]}"


def test_training_threads_is_what_torch_runs_with(tmp_path):
    """--training.threads reaches torch and stays through the loaders' epochs (the trainer sets it once)."""
    from ffcv_amcl.train import run
    from tests.train_helpers import tiny_args

    train, val = digits_betons(str(tmp_path), 64, 40)
    seen = []
    real = torch.Tensor.backward

    def noting_backward(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(self, *args, **kwargs)

    torch.set_num_threads(2)
    try:
        torch.Tensor.backward = noting_backward
        run(tiny_args(train, tmp_path / "run", "--training.threads=1", "--data.num_workers=2", "--training.epochs=2",
                      "--eval.knn_every=1", val=val))
    finally:
        torch.Tensor.backward = real
    assert seen and set(seen) == {1}, seen
    assert torch.get_num_threads() == 1


def test_our_loaders_keep_torch_threads_and_ffcv_keeps_its_loader(tmp_path):
    """Building and iterating the package's loaders leaves torch's thread count alone, and FFCV's own Loader
    still runs FFCV's own epoch iterator (importing the package changes nothing in FFCV)."""
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.rgb_image import SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.loader.epoch_iterator import EpochIterator

    from ffcv_amcl.data.loader import make_eval_loader, make_ssl_loader

    train, _ = digits_betons(str(tmp_path), 64, 40)
    torch.set_num_threads(3)
    loaders = [make_ssl_loader(train, 16, num_workers=1), make_eval_loader(train, 16, num_workers=2)]
    assert torch.get_num_threads() == 3
    for loader in loaders:
        for epoch in range(2):
            loader.set_epoch(epoch)
            for _ in loader:
                assert torch.get_num_threads() == 3
    plain = Loader(train, batch_size=16, num_workers=1, order=OrderOption.SEQUENTIAL,
                   pipelines={"image": [SimpleRGBImageDecoder()], "label": [IntDecoder()]})
    batches = iter(plain)
    assert type(batches) is EpochIterator
    list(batches)
    torch.set_num_threads(machine.torch_threads())


def test_importing_the_package_changes_nothing_in_ffcv():
    code = ("import ffcv.loader.loader as L; E = L.EpochIterator; import ffcv_amcl.data.loader; "
            "import ffcv_amcl.train, ffcv_amcl.profile, ffcv_amcl.eval; assert L.EpochIterator is E")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_default_threads_follow_omp_num_threads_else_the_usable_cores(monkeypatch):
    cores = len(os.sched_getaffinity(0))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert machine.torch_threads(0) == cores and machine.torch_threads(3) == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(cores + 1))          # torchrun's processes share the cores
    assert machine.torch_threads(0) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "5")                      # what the user (or torchrun) asked for
    assert machine.torch_threads(0) == 5 and machine.torch_threads(2) == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert machine.torch_threads(0) == cores


def test_a_process_on_one_cpu_that_forked_exits():
    """With one usable CPU, numba's TBB layer hangs the process at exit once it has forked with a preexec hook (as
    the compare command starts its runs); the package has numba use OpenMP there."""
    pytest.importorskip("numba.np.ufunc.tbbpool", reason="numba has no TBB layer here: nothing to hang")
    code = ("import os, subprocess, ffcv_amcl, numba; numba.set_num_threads(1); "
            "subprocess.run(['true'], preexec_fn=lambda: None, check=True); print(numba.threading_layer())")
    pin = lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # noqa: E731
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_THREADING_LAYER")}
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
                       preexec_fn=pin)
    assert r.returncode == 0 and r.stdout.strip() == "omp", r.stderr


MAPPED = """
import ctypes, sys
from ffcv_amcl import machine

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
if sys.argv[1] == "1" and not machine.keep_freed_memory():
    sys.exit("mallopt refused the settings")
before = libc.mallinfo2().hblkhd
block = libc.malloc(64 << 20)
print(libc.mallinfo2().hblkhd - before)
libc.free(ctypes.c_void_p(block))
"""


def test_kept_memory_serves_large_blocks_from_the_heap():
    """keep_freed_memory: a 64 MB block (a MoCo queue's similarities; above glibc's largest mmap threshold, 32 MB)
    comes from the heap, whose freed memory the next step reuses, not from a mapping of its own (glibc's default
    above 128 KB)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        pytest.skip("needs glibc 2.33 or later (mallinfo2)")
    mapped = {}
    for keep in ("0", "1"):
        r = subprocess.run([sys.executable, "-c", MAPPED, keep], cwd=REPO, capture_output=True, text=True,
                           timeout=120, env={k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")})
        assert r.returncode == 0, r.stderr
        mapped[keep] = int(r.stdout)
    assert mapped["0"] >= 64 << 20 and mapped["1"] == 0, mapped


@pytest.mark.parametrize("quotas,expected", [({"a/b": "max 100000", "a": "50000 100000"}, True),
                                             ({"a/b": "150000 100000"}, True),
                                             ({"a/b": "max 100000", "a": "200000 100000", "": "max 100000"}, False),
                                             ({}, False)])
def test_one_cpu_reads_the_quota_of_the_process_cgroup_and_those_above(tmp_path, monkeypatch, quotas, expected):
    monkeypatch.setattr(machine, "usable_cores", lambda: 2)
    (tmp_path / "cgroup").write_text("1:cpu:/\n0::/a/b\n")
    for folder, quota in quotas.items():
        (tmp_path / "fs" / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / "fs" / folder / "cpu.max").write_text(quota + "\n")
    assert machine.one_cpu(str(tmp_path / "cgroup"), str(tmp_path / "fs")) is expected
