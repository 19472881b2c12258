"""The .beton writer under faults: a full or read-only disk is one line with nothing left behind and no hang;
a killed writer takes its worker processes with it and leaves no /dev/shm segment, and the temporary file it
leaves is removed by the next start (remove_stale_temps)."""
from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ffcv_amcl.errors import UserError
from tests.tmpfs import mounted_tmpfs
from tests.train_helpers import REPO


def _record_segments(monkeypatch) -> list[str]:
    """Names of the shared-memory segments FFCV's writer creates from now on (other processes may use /dev/shm
    at the same time: only these are checked)."""
    import ffcv.writer

    names, prepare = [], ffcv.writer.DatasetWriter.prepare

    def recorded(self):
        prepare(self)
        names.append(self.metadata_sm.name)

    monkeypatch.setattr(ffcv.writer.DatasetWriter, "prepare", recorded)
    return names


def _segments_of(pid: int) -> set[str]:
    """The /dev/shm/psm_* segments process pid maps."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return set(re.findall(r"/dev/shm/(psm_\w+)", maps))


def _data(n=300):
    from ffcv_amcl.data.write import ArrayDataset

    return ArrayDataset(np.full((n, 8, 8, 3), 7, np.uint8), np.arange(n) % 3)


def _fail_first_page_flush(monkeypatch):
    """The worker holding page 0 finds the disk full when it writes it; the other then waits for that page."""
    from ffcv.memory_allocator import MemoryAllocator

    flush = MemoryAllocator.flush_page

    def full(self):
        if self.my_page == 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return flush(self)

    monkeypatch.setattr(MemoryAllocator, "flush_page", full)


def _fail_in_parent(monkeypatch, method, err):
    import ffcv.writer

    def fails(self, *a, **k):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(ffcv.writer.DatasetWriter, method, fails)


FULL = "no space left on device writing {}: free space or choose another folder"
FAULTS = {"worker_flush_disk_full": (_fail_first_page_flush, FULL),
          "parent_table_disk_full": (lambda mp: _fail_in_parent(mp, "finalize", errno.ENOSPC), FULL),
          "read_only_at_start": (lambda mp: _fail_in_parent(mp, "prepare", errno.EROFS),
                                 "read-only file system writing {}: choose a writable folder")}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fault", FAULTS)
def test_disk_errors_are_one_line_and_leave_nothing(tmp_path, monkeypatch, fault):
    from ffcv_amcl.data.write import write_beton

    inject, expected = FAULTS[fault]
    segments = _record_segments(monkeypatch)
    inject(monkeypatch)
    path = tmp_path / "out.beton"
    with pytest.raises(UserError) as err:
        write_beton(path, _data(), num_workers=2, meta={"num_classes": 3})
    assert str(err.value) == expected.format(path)
    assert os.listdir(tmp_path) == []
    assert not any(os.path.exists(f"/dev/shm/{name}") for name in segments)


def test_cli_disk_full_on_a_small_tmpfs(tmp_path):
    with mounted_tmpfs(tmp_path / "small", "2M") as small:
        env = dict(os.environ, OMP_NUM_THREADS="1")
        env.pop("FFCV_AMCL_DEBUG", None)
        res = subprocess.run([sys.executable, str(REPO / "write_datasets.py"), "--cfg.dataset=digits",
                              "--cfg.split=test", f"--cfg.write_path={small / 'd.beton'}", "--cfg.num_workers=2"],
                             capture_output=True, text=True, env=env, timeout=60)
        errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert errors == [f"error: no space left on device writing {small / 'd.beton'}: free space or choose "
                          f"another folder"], res.stderr
        assert os.listdir(small) == []


SLOW_WRITER = """
import sys, time
import numpy as np
from ffcv_amcl.data.write import ArrayDataset, write_beton

class Slow(ArrayDataset):
    def __getitem__(self, i):
        time.sleep(0.1)
        return super().__getitem__(i)

write_beton(sys.argv[1], Slow(np.zeros((1000, 8, 8, 3), np.uint8), np.zeros(1000, np.int64)), num_workers=2)
"""


def _children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is pid."""
    out = []
    for entry in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except (OSError, ValueError):
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if entry.isdigit() and int(ppid) == pid and state != "Z":
            out.append(int(entry))
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killed_writer_takes_its_workers_and_its_leftovers_are_removed(tmp_path):
    from ffcv_amcl.atomic import remove_stale_temps

    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(tmp_path / "slow.beton")], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kids: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(kids) < 2 and time.monotonic() < deadline:  # two workers (and maybe a resource tracker)
            time.sleep(0.2)
            kids = [k for k in _children(proc.pid)
                    if b"resource_tracker" not in Path(f"/proc/{k}/cmdline").read_bytes()]
        assert len(kids) >= 2, "the writer's workers never started"
        segments = _segments_of(kids[0])
        proc.kill()
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_alive(k) for k in kids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(k) for k in kids), "workers outlived their killed parent"
    finally:
        for k in kids:
            if _alive(k):
                os.kill(k, signal.SIGKILL)
    assert segments and not any(os.path.exists(f"/dev/shm/{name}") for name in segments)
    temp = tmp_path / f".slow.beton.tmp-{proc.pid}"
    assert temp.exists() and remove_stale_temps(tmp_path) == [temp] and os.listdir(tmp_path) == []


def test_unknown_flag_is_one_line():
    res = subprocess.run([sys.executable, str(REPO / "write_datasets.py"), "--cfg.split=test",
                          "--cfg.write_path=x.beton", "--cfg.bogus=1"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and res.stdout == "", res.stdout
    assert re.fullmatch(r"error: unrecognized arguments: --cfg\.bogus=1 \(see --help\)\n", res.stderr), res.stderr


def test_jpegs_that_do_not_decode_are_found_before_the_file_takes_its_name(tmp_path, monkeypatch):
    """An encoder whose output lost its start marker: the written file is refused before it is renamed."""
    import ffcv.fields.rgb_image as rgb

    from ffcv_amcl.data.write import write_beton

    encode = rgb.encode_jpeg

    def without_start_marker(image, quality):
        data = encode(image, quality).copy()
        data[:2] = 0
        return data

    monkeypatch.setattr(rgb, "encode_jpeg", without_start_marker)        # the writer's forked workers inherit it
    with pytest.raises(UserError, match=r"^the file written for .*x\.beton is not a readable \.beton \(12 of the 12 "
                                        r"JPEG images checked do not decode, sample 0 first\): nothing was written"):
        write_beton(tmp_path / "x.beton", _data(12), write_mode="jpg", num_workers=1)
    assert list(tmp_path.iterdir()) == []


def test_writer_settings_out_of_range_are_refused_before_reading():
    from ffcv_amcl.data.sources import open_source
    from ffcv_amcl.data.write import write_beton

    with pytest.raises(UserError, match=r"^cfg.subset=5000 exceeds the 1437 images of digits train: give at most "
                                        r"1437, or -1 for all$"):
        open_source("digits", None, "train", subset=5000)
    with pytest.raises(UserError, match=r"^max_resolution 0: give a positive number of pixels"):
        write_beton("/tmp/never.beton", _data(4), max_resolution=0)
