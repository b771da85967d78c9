"""The process-wide thread count handed to every kernel call.

Kernels never rely on OpenMP's per-thread defaults: each call passes its
team size explicitly. Until `set_num_threads` is called, that size is what
OpenMP would use on the calling thread, so OMP_NUM_THREADS and
threadpoolctl's limits are honoured.
"""
import operator

from . import _kernels

_num_threads = None  # None: follow OpenMP's default


def set_num_threads(n):
    """Use `n` threads in every kernel call, from any Python thread.

    `set_num_threads(None)` returns to OpenMP's default (all cores, or
    OMP_NUM_THREADS, or a threadpoolctl limit).
    """
    global _num_threads
    if n is None:
        _num_threads = None
        return
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"n: expected an int >= 1 or None, got {type(n).__name__}") from None
    if n < 1:
        raise ValueError(f"n: expected an int >= 1 or None, got {n}")
    _num_threads = n


def get_num_threads():
    """The number of threads the next kernel call will use at most."""
    if _num_threads is not None:
        return _num_threads
    return max(1, _kernels.openmp_max_threads())
