"""Per-image counter-based random streams.

FFCV's numba random state cannot be seeded from Python and depends on which thread handles which
image. Here every random number is a pure function of (seed, epoch, sample index, view, family,
draw number): a splitmix64 hash chain. Results therefore do not depend on batch composition,
worker count, prefetching or the distributed split, and two runs with one seed agree exactly.
"""
from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic
import numba

# One constant per augmentation family: each family has its own stream, so switching a family on
# or off never shifts the random numbers another family sees.
CROP = 1
BLUR = 2
GRAY = 3
JITTER = 4
FLIP = 5
SOLARIZE = 6

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_INV53 = 1.0 / 9007199254740992.0  # 2**-53


@njit(cache=True, inline="always", error_model="numpy")
def mix64(z):
    """splitmix64 finaliser: a bijective, well-mixed uint64 -> uint64 hash."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@njit(cache=True, error_model="numpy")
def stream_key(seed, epoch, index, view, family):
    """Key of one image's stream for one family; all inputs are non-negative integers."""
    k = mix64(np.uint64(seed) + _GOLDEN)
    k = mix64(k ^ (np.uint64(epoch) * _M1 + _GOLDEN))
    k = mix64(k ^ (np.uint64(index) * _M2 + _GOLDEN))
    k = mix64(k ^ (np.uint64(view) * _GOLDEN + _M1))
    k = mix64(k ^ (np.uint64(family) * _GOLDEN + _M2))
    return k


@njit(cache=True, error_model="numpy")
def uniform(key, counter):
    """Draw number `counter` of the stream `key`, uniform in [0, 1) with 53 random bits."""
    z = mix64(np.uint64(key) + (np.uint64(counter) + np.uint64(1)) * _GOLDEN)
    return np.float64(z >> _S11) * _INV53


@njit(cache=True, error_model="numpy")
def uniform_range(key, counter, lo, hi):
    return lo + (hi - lo) * uniform(key, counter)


def runtime_ints(*values: int) -> np.ndarray:
    """Closure constants (seed, epoch address) as an int64 array for a stage's compiled code.

    An int captured by a jitted closure is typed as a literal, so every seed and every address
    (new in each process) would compile another specialisation of the cached helpers here and
    add it to the on-disk cache for good; an array element is a plain int64, compiled once.
    """
    return np.array(values, dtype=np.int64)


@intrinsic
def _voidptr_from_address(typingctx, address):
    """Turn an integer address into a void* inside compiled code (numba has no cast for this)."""
    sig = types.voidptr(address)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return sig, codegen


@njit(cache=True, error_model="numpy")
def read_counter(address):
    """Read the int64 at `address`: the epoch lives in a numpy array owned by the loader.

    A numpy array captured by a jitted closure would be frozen at compile time, and recompiling
    every epoch costs seconds; reading through the address sees the value set for each epoch.
    """
    return numba.carray(_voidptr_from_address(address), (1,), np.int64)[0]


class EpochCounter:
    """The epoch shared with compiled stages (FFCV workers are threads: one address space)."""

    def __init__(self, epoch: int = 0):
        self._cell = np.zeros(1, dtype=np.int64)
        self._cell[0] = epoch
        self.address = int(self._cell.ctypes.data)

    @property
    def value(self) -> int:
        return int(self._cell[0])

    @value.setter
    def value(self, epoch: int) -> None:
        self._cell[0] = int(epoch)


@njit(cache=True, error_model="numpy")
def draw(seed, epoch, index, view, family, counter):
    """uniform(stream_key(...), counter) in one call (keys above 2**63 cannot round-trip
    through Python into numba, so Python callers use this)."""
    return uniform(stream_key(seed, epoch, index, view, family), counter)
