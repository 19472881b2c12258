import os
import sys
import threading

import pytest

# Keep numba/torch from oversubscribing the 2-core CI machine: one thread per pytest-xdist worker (scripts/test.sh
# runs one worker more than the cores), two in a single process.
os.environ.setdefault("OMP_NUM_THREADS", "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2")


@pytest.hookimpl(trylast=True)          # after pytest's own unraisable-exception hook is in place
def pytest_configure(config):
    """Pass every unraisable exception to pytest except numba's KeyError in a dispatcher's finalizer (numba 0.68:
    the finalizer of an `imdecode` dispatcher FFCV compiled for a loader fails to iterate its overloads; it only
    releases references). pytest formats an unraisable exception's traceback as it arrives, during garbage collection, and
    Python 3.11's traceback formatting runs `ast.parse`: arriving while another `ast.parse` (pydantic's, at
    `import timm`) builds its tree, it corrupts that parse's recursion count (SystemError)."""
    report = sys.unraisablehook

    def hook(unraisable):
        tb = unraisable.exc_traceback
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        code = tb.tb_frame.f_code if tb is not None else None
        if (unraisable.exc_type is KeyError and code is not None and code.co_name == "finalizer"
                and code.co_filename.endswith("numba/core/dispatcher.py")):
            return
        report(unraisable)

    sys.unraisablehook = hook


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


@pytest.fixture(autouse=True)
def _no_loader_thread_outlives_its_test():
    """A loader thread left running would work on beside the next test (compiling, reading its mapped file)."""
    yield
    if "ffcv.loader.epoch_iterator" not in sys.modules:
        return
    from ffcv.loader.epoch_iterator import EpochIterator

    from ffcv_amcl.data.loader import _GuardedEpochIterator

    for thread in threading.enumerate():
        if isinstance(thread, _GuardedEpochIterator):
            thread.close()                  # stops the thread, waits for it, releases the epoch's memory
        elif isinstance(thread, EpochIterator):
            thread.terminate_event.set()    # FFCV's own close only signals
            thread.join(timeout=30)
