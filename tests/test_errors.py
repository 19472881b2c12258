"""The shared user-error helpers: OSErrors become one line naming path, cause and fix; outputs are checked
before the work; a bad flag is one line, not argparse's usage text."""
from __future__ import annotations

import errno
import os
import tempfile

import pytest

from ffcv_amcl.errors import ArgumentParser, UserError, check_output_file, os_error, user_io
from tests.tmpfs import mounted_tmpfs


@pytest.mark.parametrize("code,line", [
    (errno.ENOSPC, "no space left on device writing out/x.pt: free space or choose another folder"),
    (errno.EROFS, "read-only file system writing out/x.pt: choose a writable folder"),
    (errno.EACCES, "permission denied writing out/x.pt: choose a folder you may write to, or fix its permissions"),
    (errno.ENOENT, "no such file or directory writing out/x.pt: create the folder first, or fix the path"),
    (errno.EIO, f"{os.strerror(errno.EIO)} writing out/x.pt: check the path and the disk"),
])
def test_os_error_names_path_cause_and_fix(code, line):
    assert str(os_error(OSError(code, os.strerror(code)), "out/x.pt")) == line


def test_user_io_converts_os_errors_only():
    with pytest.raises(UserError, match="^no space left on device reading a.bin: "):
        with user_io("a.bin", "reading"):
            raise OSError(errno.ENOSPC, "full")
    with pytest.raises(KeyError):
        with user_io("a.bin"):
            raise KeyError("not about the disk")


def test_output_checks_happen_before_the_work(tmp_path, monkeypatch):
    check_output_file(tmp_path / "res.json", "--output")  # fine: nothing raised, nothing left
    assert os.listdir(tmp_path) == []
    with pytest.raises(UserError, match=rf"^--output: directory {tmp_path}/missing does not exist: create it"):
        check_output_file(tmp_path / "missing" / "res.json", "--output")
    with pytest.raises(UserError, match=r"^--out=.* is a directory: give a file name"):
        check_output_file(tmp_path, "--out")

    def refused(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refused)
    with pytest.raises(UserError, match=rf"^--output: permission denied writing in {tmp_path}: "):
        check_output_file(tmp_path / "res.json", "--output")


def test_read_only_folder_is_refused_up_front(tmp_path):
    with mounted_tmpfs(tmp_path / "ro", "1M", readonly=True) as ro:
        with pytest.raises(UserError, match=rf"^--out: read-only file system writing in {ro}: choose a writable"):
            check_output_file(ro / "grid.png", "--out")


def test_argument_parser_reports_unknown_flags_in_one_line():
    parser = ArgumentParser(prog="x")
    parser.add_argument("--n", type=int)
    with pytest.raises(UserError, match=r"^unrecognized arguments: --m=3 \(see --help\)$"):
        parser.parse_args(["--m=3"])
    with pytest.raises(UserError, match=r"argument --n: invalid int value: '1.5' \(see --help\)"):
        parser.parse_args(["--n=1.5"])
