"""The machine a process runs on: how many CPU threads torch uses here, and what ran a measurement (every
benchmark and profile names its machine, so numbers can be trusted)."""
from __future__ import annotations

import os
import platform
import sys


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def one_cpu(cgroup_file: str = "/proc/self/cgroup", root: str = "/sys/fs/cgroup") -> bool:
    """Whether this process may run on one CPU only: its affinity, or a cgroup v2 quota below two CPUs on its
    cgroup or one above it."""
    if usable_cores() == 1:
        return True
    try:
        with open(cgroup_file) as f:
            own = next(line.split(":", 2)[2].strip() for line in f if line.startswith("0::"))
    except (OSError, StopIteration, IndexError):
        return False
    path = root + own.rstrip("/")
    while path.startswith(root):
        try:
            with open(path + "/cpu.max") as f:
                quota, period = f.read().split()
            if quota != "max" and int(quota) < 2 * int(period):
                return True
        except (OSError, ValueError):
            pass
        path = path.rsplit("/", 1)[0]
    return False


def numba_threads_without_tbb_on_one_cpu() -> None:
    """With one usable CPU, numba's TBB threading layer (Debian's libtbb, which libopencv-dev installs) hangs the
    process at exit once it has forked a child with a preexec hook (unload_tbb waits on a task group no thread
    will run, as after the compare command starts its runs or submitit its jobs): there numba uses OpenMP, also
    thread-safe, before FFCV starts numba's threads. (GNU OpenMP is not fork-safe once a parallel region ran; on
    one CPU FFCV runs none unless data.num_workers > 1.) The setting
    goes to child processes too, which then prefer OpenMP even with more CPUs. A user's NUMBA_THREADING_LAYER or
    _PRIORITY, or numba threads already running, are left as they are."""
    if "NUMBA_THREADING_LAYER" in os.environ or "NUMBA_THREADING_LAYER_PRIORITY" in os.environ or not one_cpu():
        return
    priority = "omp tbb workqueue"
    os.environ["NUMBA_THREADING_LAYER_PRIORITY"] = priority       # this process's numba and its children's
    if "numba" in sys.modules:                                     # imported already: its config was read
        from numba.core import config
        from numba.np.ufunc import parallel
        if not parallel._is_initialized:
            config.THREADING_LAYER_PRIORITY = priority.split()


def keep_freed_memory() -> bool:
    """Keep the memory of freed CPU tensors for the next step (glibc on Linux; elsewhere nothing changes).

    glibc gives a block above its mmap threshold (128 KB at first, 32 MB at most) a mapping of its own, unmapped
    when freed, and returns the heap's free top to the system: a CPU step that allocates activations and matrices
    of several MB (the (C, 2B, 2B) similarities of all heads: 12 MB at C=3, B=512, 32 MB at C=8; a MoCo queue's
    (C, 2B, K): 96 MB at C=3, B=256, K=16384) maps, faults in and unmaps them again on every step. With no
    mappings and no trimming below 1 GB, every block comes from the heap and the next step reuses it; the process
    keeps its peak memory. Returns whether glibc took both settings."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4                          # glibc's malloc.h
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 1 << 30))


def torch_threads(setting: int = 0) -> int:
    """torch's CPU thread count for `training.threads`: the setting itself; for 0, OMP_NUM_THREADS when it is
    set (the variable torch itself reads, and torchrun sets for several processes), else the usable cores shared
    among the processes torchrun starts on this machine (LOCAL_WORLD_SIZE; one process alone gets them all)."""
    if setting > 0:
        return int(setting)
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > 0:
        return int(omp)
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, usable_cores() // local)


def set_torch_threads(setting: int = 0) -> int:
    """Set torch's CPU threads (`torch_threads(setting)`) for the rest of the process and return the count.

    The one place that decides them: the trainer, the profiler and eval call it, the package's loaders keep it
    (data.loader.GuardedLoader), so the same seed gives the same weights for any data.num_workers. FFCV is
    imported first, because importing it sets torch's threads to 1."""
    import ffcv.pipeline.compiler  # noqa: F401  (its import-time torch.set_num_threads(1) must come before ours)
    import torch

    threads = torch_threads(setting)
    torch.set_num_threads(threads)
    return threads


def describe(device: str = "cpu") -> dict:
    """Plain-JSON description of the device a measurement ran on."""
    import torch

    info = {
        "device": str(device),
        "cpu": cpu_name(),
        "cores": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if str(device).startswith("cuda") and torch.cuda.is_available():
        idx = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(idx)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
    return info


def one_line(info: dict) -> str:
    """'NVIDIA H100 80GB HBM3 (torch 2.11.0)' or '2 cores of Intel Xeon ... (torch 2.14.1, 2 threads)'."""
    if "gpu" in info:
        return f"{info['gpu']} + {info['cores']} cores of {info['cpu']} (torch {info['torch']})"
    return f"{info['cores']} cores of {info['cpu']} (torch {info['torch']}, {info['torch_threads']} threads)"
