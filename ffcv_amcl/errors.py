"""User-facing failures: one clear line, a non-zero exit, never a traceback for a user's mistake."""
from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import os
import sys
import warnings
from pathlib import Path
from typing import Callable, Iterator


class UserError(ValueError):
    """A mistake the user can fix (bad flag, missing file, corrupt input). The message names cause and fix.
    A ValueError, so library callers can catch it without importing ffcv_amcl's own exception types."""


def warn(message: str) -> None:
    """A warning: one line on stderr, prefixed `warning: `."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def check(condition: bool, message: str) -> None:
    """Raise UserError(message) unless condition holds."""
    if not condition:
        raise UserError(message)


# errno -> (what happened, what to do): the causes a user meets when writing outputs.
_OS_CAUSES = {
    errno.ENOSPC: ("no space left on device", "free space or choose another folder"),
    errno.EDQUOT: ("disk quota exceeded", "free space or choose another folder"),
    errno.EROFS: ("read-only file system", "choose a writable folder"),
    errno.EACCES: ("permission denied", "choose a folder you may write to, or fix its permissions"),
    errno.EPERM: ("operation not permitted", "choose a folder you may write to, or fix its permissions"),
    errno.ENOENT: ("no such file or directory", "create the folder first, or fix the path"),
    errno.ENOTDIR: ("a part of the path is not a directory", "fix the path"),
    errno.EISDIR: ("it is a directory", "give a file name"),
}


def os_error(exc: OSError, path, action: str = "writing") -> UserError:
    """The one line for an OSError met while `action` `path`: cause (from errno) and fix."""
    cause, fix = _OS_CAUSES.get(exc.errno, (exc.strerror or type(exc).__name__, "check the path and the disk"))
    return UserError(f"{cause} {action} {path}: {fix}")


def _os_error_in(exc: BaseException | None) -> OSError | None:
    """The OSError in exc's chain: torch.save, for one, reports a failed file write as a RuntimeError
    whose __context__ is the OSError."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


@contextlib.contextmanager
def user_io(path, action: str = "writing") -> Iterator[None]:
    """Turn an OSError inside the block (directly or as the cause of another error) into one UserError line
    naming `path`: disk full, read-only folder, no permission, missing folder."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        found = _os_error_in(exc)
        if found is None:
            raise
        raise os_error(found, path, action) from exc


def check_input_file(path, what: str, fix: str):
    """`path` as a Path once it names a regular file; else one line naming `what` (a flag such as
    'training.resume=' is joined to the path): not found (with `fix`), a directory, or something other than a file."""
    p = Path(path)
    subject = f"{what}{p}" if what.endswith("=") else f"{what} {p}"
    if p.is_dir():
        raise UserError(f"{subject} is a directory, not a file: give the path of the file inside it")
    if not p.exists():
        raise UserError(f"{subject} not found: {fix}")
    if not p.is_file():
        raise UserError(f"{subject} is not a regular file: {fix}")
    return p


def check_writable_dir(folder, flag: str) -> None:
    """Refuse, before any work, an output folder that is missing or cannot take a new file (`flag` names the
    setting in the message)."""
    import tempfile

    if not os.path.isdir(folder):
        raise UserError(f"{flag}: directory {folder} does not exist: create it first, or fix the path")
    try:
        tempfile.TemporaryFile(dir=folder).close()  # an unnamed file where the OS allows: nothing to clean up
    except OSError as exc:
        raise UserError(f"{flag}: {os_error(exc, folder, 'writing in')}") from None


def check_output_file(path, flag: str) -> None:
    """check_writable_dir for the folder of output file `path`, which must not be a directory itself."""
    if os.path.isdir(path):
        raise UserError(f"{flag}={path} is a directory: give a file name inside it")
    check_writable_dir(os.path.dirname(os.path.abspath(path)), flag)


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad or unknown flag as one UserError line instead of usage text and exit 2."""

    def error(self, message):
        raise UserError(f"{message} (see --help)")


def cli(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a console entry point: UserError -> 'error: ...' on stderr and exit code 2, on a line of its own (a
    progress bar it interrupted is closed first); Python warnings (torch's, numba's) print as one line each.

    Set FFCV_AMCL_DEBUG=1 to see the full traceback and warnings instead.
    """

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        debug = bool(os.environ.get("FFCV_AMCL_DEBUG"))
        try:
            with warnings.catch_warnings():
                if not debug:
                    warnings.showwarning = _one_line_warning
                code = main(*args, **kwargs)
        except UserError as exc:
            if debug:
                raise
            _close_progress_bars()
            print(f"error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2)
        except KeyboardInterrupt:
            _close_progress_bars()
            print("error: interrupted", file=sys.stderr, flush=True)
            raise SystemExit(130)
        raise SystemExit(code or 0)

    return wrapper


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """warnings.showwarning as one line: 'warning: <first line of the message> (<category>, <file>:<line>)'."""
    text = (str(message).strip().splitlines() or [""])[0].split(" (Triggered internally at")[0][:300]
    print(f"warning: {text} ({category.__name__}, {os.path.basename(filename)}:{lineno})", file=sys.stderr,
          flush=True)


def _close_progress_bars() -> None:
    """Close the tqdm bars an error interrupted, so that the error line starts a line of its own."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
        bar.close()
