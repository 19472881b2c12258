"""atomic_path: the target is replaced whole or not at all, the temporary file never outlives a failure, and
disk errors are one line naming the target; remove_stale_temps clears what killed writers left."""
from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from ffcv_amcl.atomic import atomic_path, remove_stale_temps
from ffcv_amcl.errors import UserError
from tests.tmpfs import mounted_tmpfs


def test_success_replaces_the_target(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.name == f".out.json.tmp-{os.getpid()}"
        tmp.write_text("new")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["out.json"]


@pytest.mark.parametrize("exc", [ValueError("bug"), KeyboardInterrupt()])
def test_any_failure_keeps_the_target_and_removes_the_temp(tmp_path, exc):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(type(exc)):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise exc
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["out.json"]


def test_disk_full_inside_the_block_is_one_line(tmp_path):
    """torch.save reports a full disk as a RuntimeError whose context is the OSError: found all the same."""
    target = tmp_path / "ckpt.pt"
    with pytest.raises(UserError) as err:
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            try:
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")
    assert str(err.value) == f"no space left on device writing {target}: free space or choose another folder"
    assert os.listdir(tmp_path) == []


def test_rename_refused_is_one_line_and_the_temp_goes(tmp_path, monkeypatch):
    def read_only(src, dst):
        raise OSError(errno.EROFS, "Read-only file system", str(dst))

    monkeypatch.setattr(os, "replace", read_only)
    target = tmp_path / "metrics.json"
    with pytest.raises(UserError, match=rf"^read-only file system writing {target}: choose a writable folder$"):
        with atomic_path(target) as tmp:
            tmp.write_text("x")
    assert os.listdir(tmp_path) == []


def test_read_only_folder_is_one_line_without_a_chained_error(tmp_path):
    with mounted_tmpfs(tmp_path / "ro", "1M", readonly=True) as ro:
        with pytest.raises(UserError) as err:
            with atomic_path(ro / "config.json") as tmp:
                tmp.write_text("{}")
        assert str(err.value) == f"read-only file system writing {ro / 'config.json'}: choose a writable folder"
        assert isinstance(err.value.__cause__, OSError) and err.value.__cause__.__context__ is None


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_remove_stale_temps_removes_only_files_of_ended_processes(tmp_path):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = _dead_pid()
        names = {"stale": f".x.beton.tmp-{dead}", "running": f".y.pt.tmp-{live.pid}",
                 "ours": f".z.json.tmp-{os.getpid()}", "not_hidden": f"w.tmp-{dead}", "no_pid": ".v.tmp-abc",
                 "plain": "ckpt_e0001_s00000010.pt"}
        for name in names.values():
            (tmp_path / name).write_text("x")
        (tmp_path / f".dir.tmp-{dead}").mkdir()
        assert remove_stale_temps(tmp_path) == [tmp_path / names["stale"]]
        assert sorted(os.listdir(tmp_path)) == sorted([*(v for k, v in names.items() if k != "stale"),
                                                      f".dir.tmp-{dead}"])
    finally:
        live.kill()
        live.wait()
    assert remove_stale_temps(tmp_path / "missing") == []
