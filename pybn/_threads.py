"""The process-wide thread count handed to every kernel call.

Kernels never rely on OpenMP's per-thread defaults: each call passes its
team size explicitly. Until `set_num_threads` is called, that size is what
OpenMP would use on the calling thread, so OMP_NUM_THREADS and
threadpoolctl's limits are honoured.
"""
import operator

from . import _kernels

_MAX_THREADS = 2**15


def set_num_threads(n):
    """Use `n` threads in every kernel call, from any Python thread.

    `set_num_threads(None)` returns to OpenMP's default (all cores, or
    OMP_NUM_THREADS, or a threadpoolctl limit).
    """
    if n is None:
        _kernels.request_threads(0)
        return
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"n: expected an int >= 1 or None, got {type(n).__name__}") from None
    if n < 1:
        raise ValueError(f"n: expected an int >= 1 or None, got {n}")
    if n > _MAX_THREADS:
        raise ValueError(f"n: expected at most {_MAX_THREADS} threads, got {n}")
    _kernels.request_threads(n)


def requested_threads():
    """What set_num_threads last set: an int, or None for OpenMP's default."""
    return _kernels.requested_threads() or None


# The number of threads the next kernel call will use at most. Kept in the
# compiled module: every kernel call asks, and a Python-level function
# would cost a tenth of a small call.
get_num_threads = _kernels.num_threads
