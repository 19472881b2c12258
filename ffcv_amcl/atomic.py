"""Write to a temporary name next to the target, rename when complete: no half-written files.

The temporary name `.NAME.tmp-PID` carries the writer's PID, so a later start can tell the leftovers of a
killed writer (`remove_stale_temps`) from a file another process is still writing.
"""
from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Iterator

from ffcv_amcl.errors import user_io

_TEMP = re.compile(r"^\..+\.tmp-(\d+)$")


def temp_path(target: str | os.PathLike) -> Path:
    """Where this process writes `target` before renaming it."""
    target = Path(target)
    return target.with_name(f".{target.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, action: str = "writing") -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only if the block succeeds.

    On any failure the temporary file is removed; an OSError in the block (disk full, read-only folder, no
    permission) is taken to be about writing `target` and becomes one UserError line naming it."""
    target = Path(target)
    tmp = temp_path(target)
    try:
        with user_io(target, action):
            yield tmp
            os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the `.NAME.tmp-PID` files in `folder` whose writer process is gone (kill -9, power loss);
    returns them. Files of running processes, this one included, are left alone."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        m = _TEMP.match(path.name)
        if not m or int(m.group(1)) == os.getpid() or _pid_alive(int(m.group(1))) or not path.is_file():
            continue
        with contextlib.suppress(FileNotFoundError):  # another starter may have removed it first
            path.unlink()
            removed.append(path)
    return removed
