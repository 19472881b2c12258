"""User-facing failures: one clear line, a non-zero exit, never a traceback for a user's mistake."""
from __future__ import annotations

import functools
import os
import sys
from typing import Callable


class UserError(Exception):
    """A mistake the user can fix (bad flag, missing file, corrupt input). The message names cause and fix."""


def check(condition: bool, message: str) -> None:
    """Raise UserError(message) unless condition holds."""
    if not condition:
        raise UserError(message)


def cli(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a console entry point: UserError -> 'error: ...' on stderr and exit code 2.

    Set FFCV_AMCL_DEBUG=1 to see the full traceback instead.
    """

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            code = main(*args, **kwargs)
        except UserError as exc:
            if os.environ.get("FFCV_AMCL_DEBUG"):
                raise
            print(f"error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2)
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr, flush=True)
            raise SystemExit(130)
        raise SystemExit(code or 0)

    return wrapper
