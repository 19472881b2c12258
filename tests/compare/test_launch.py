"""Where runs execute: the machine's cores split between parallel runs, one set of GPUs per run, torchrun with its
own rendezvous for several GPUs, and the settings and environment a slot gives its run."""
from __future__ import annotations

import sys

import pytest

from ffcv_amcl.compare.launch import Slot, command, make_slots, slot_env, slot_settings, uses_cuda
from ffcv_amcl.errors import UserError


def test_cores_split_evenly_between_cpu_runs():
    slots = make_slots(3, cores=list(range(8)))
    assert [s.cores for s in slots] == [(0, 1), (2, 3), (4, 5)] and {s.threads for s in slots} == {2}
    assert all(s.gpus is None for s in slots)
    assert [s.cores for s in make_slots(3, cores=[0, 1])] == [(0,), (1,), (0,)]      # more runs than cores


def test_each_cuda_run_gets_its_own_gpus():
    slots = make_slots(2, gpus_per_run=2, cuda=True, gpus_here=4, cores=list(range(16)))
    assert [s.gpus for s in slots] == [(0, 1), (2, 3)] and [s.threads for s in slots] == [4, 4]  # 8 cores, 2 ranks
    env = slot_env(slots[1], base={"PATH": "/bin", "FFCV_AMCL_DEBUG": "1"})
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3" and env["OMP_NUM_THREADS"] == "4" and "FFCV_AMCL_DEBUG" not in env
    with pytest.raises(UserError, match="needs 6 GPUs and this machine has 4"):
        make_slots(3, gpus_per_run=2, cuda=True, gpus_here=4)


def test_commands_for_one_process_and_for_torchrun():
    slot = Slot((0, 1), 2, (0, 1))
    one = command(["--config-file", "c.yaml"], slot)
    assert one == [sys.executable, "-m", "ffcv_amcl.train", "--config-file", "c.yaml", "--training.threads=2",
                   "--data.num_workers=2"]
    two = command(["--config-file", "c.yaml"], slot, nproc=2, run_id="fashion-amcl-0")
    assert two[:3] == [sys.executable, "-m", "torch.distributed.run"] and "--nproc-per-node=2" in two
    assert {"--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0", "--rdzv-id=fashion-amcl-0"} <= set(two)
    assert two[two.index("-m", 3):][:2] == ["-m", "ffcv_amcl.train"]
    assert slot_settings(Slot()) == [] and "OMP_NUM_THREADS" not in slot_env(Slot(), base={})


def test_which_runs_use_cuda():
    assert uses_cuda({"training.device": "auto"}, 1) and not uses_cuda({"training.device": "auto"}, 0)
    assert not uses_cuda({"training.device": "cpu"}, 8) and uses_cuda({"training.device": "cuda"}, 0)
