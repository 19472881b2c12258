"""ffcv-amcl: fast self-supervised training with Adaptive Multi-head Contrastive Learning."""
__version__ = "0.1.0"

from ffcv_amcl import ffcv_import as _ffcv_import  # noqa: E402
from ffcv_amcl import machine as _machine  # noqa: E402

_machine.numba_threads_without_tbb_on_one_cpu()
_ffcv_import.install()
