"""FFCV's import without its seconds of numba compilation.

`ffcv.fields.rgb_image` builds its image-mode table (`IMAGE_MODES`, {'jpg': 0, 'raw': 1}) as a numba typed Dict
at import, and numba compiles a typed Dict's methods in every new process, uncached: `import ffcv.loader` takes
8.6 s with it and 3.4 s without (2 cores), paid by every process that reads or writes a .beton (a training, each
run of a comparison, each rank torchrun starts, a conversion). FFCV 1.0.2 reads the table from Python only (code generation, the writer), so a
plain dict holds the same two entries for every use. `install()`, called by the package's `__init__`, has the
module built with one, when (and if) something imports it after this package.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys

MODULE = "ffcv.fields.rgb_image"


class _PlainImageModes(importlib.abc.MetaPathFinder):
    """Finds `ffcv.fields.rgb_image` as the other finders do and runs it with `numba.typed.Dict` = dict; then
    leaves `sys.meta_path`."""

    def find_spec(self, name, path, target=None):
        if name != MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        run_module = spec.loader.exec_module

        def exec_module(module):
            import numba.typed

            typed_dict = numba.typed.Dict
            numba.typed.Dict = dict
            try:
                run_module(module)
            finally:
                numba.typed.Dict = typed_dict

        spec.loader.exec_module = exec_module
        return spec


def install() -> None:
    if MODULE not in sys.modules and not any(isinstance(f, _PlainImageModes) for f in sys.meta_path):
        sys.meta_path.insert(0, _PlainImageModes())
