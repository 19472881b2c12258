import os

import pytest

# Keep numba/torch from oversubscribing the 2-core CI machine: one thread per pytest-xdist worker (scripts/test.sh
# runs one worker per core), two in a single process.
os.environ.setdefault("OMP_NUM_THREADS", "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2")


def pytest_collection_modifyitems(config, items):
    # Files with a `slow` test first (each file runs on one xdist worker): the longest work starts at once
    # instead of ending the run alone on one core.
    slow_files = {item.path for item in items if "slow" in item.keywords}
    items.sort(key=lambda item: item.path not in slow_files)
    try:
        import torch
        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
