"""FFCV imported after the package: its image-mode table as a plain dict (no numba typed Dict to compile)."""
import subprocess
import sys

from tests.train_helpers import REPO


def test_ffcv_imported_after_the_package_reads_its_image_modes_from_a_plain_dict():
    code = ("import sys, ffcv_amcl, numba.typed, ffcv.fields.rgb_image as r; "
            "from numba.typed.typeddict import Dict; "
            "assert type(r.IMAGE_MODES) is dict and r.IMAGE_MODES == {'jpg': 0, 'raw': 1}, r.IMAGE_MODES; "
            "assert numba.typed.Dict is Dict; "
            "assert not [f for f in sys.meta_path if type(f).__module__ == 'ffcv_amcl.ffcv_import']")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
