"""The process-wide thread count handed to every kernel call.

Kernels never rely on OpenMP's per-thread defaults: each call passes its
team size explicitly. Until `set_num_threads` is called, that size is what
OpenMP would use on the calling thread, so OMP_NUM_THREADS and
threadpoolctl's limits are honoured.

Two limits keep a process alive whatever it asks for:
- at most MAX_THREADS_PER_CPU threads per CPU this process may run on: more
  never speeds a kernel up, and each OpenMP thread reserves a stack (a
  thousand of them exhausted a memory limit inside libgomp);
- after fork, a child of a process that ran a team runs every kernel on its
  calling thread: GNU OpenMP's thread pool does not survive fork, and a
  team started in the child would hang. Pools started by pybn use spawn.
"""
import operator
import os

from . import _kernels

MAX_THREADS_PER_CPU = 4


def _cpus():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def max_threads():
    """The most threads a kernel call may use in this process."""
    return MAX_THREADS_PER_CPU * _cpus()


_kernels.set_thread_bound(max_threads())
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_kernels.after_fork_in_child)


def set_num_threads(n):
    """Use `n` threads in every kernel call, from any Python thread.

    `set_num_threads(None)` returns to OpenMP's default (all cores, or
    OMP_NUM_THREADS, or a threadpoolctl limit). n may be at most
    `max_threads()` (4 per CPU available to the process). In a forked child
    of a process that used threads, kernels run on one thread whatever n.
    """
    if n is None:
        _kernels.request_threads(0)
        return
    if isinstance(n, bool):
        raise TypeError("n: expected an int >= 1 or None, got bool")
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"n: expected an int >= 1 or None, got {type(n).__name__}") from None
    if n < 1:
        raise ValueError(f"n: expected an int >= 1 or None, got {n}")
    if n > max_threads():
        raise ValueError(f"n: expected at most {max_threads()} threads "
                         f"({MAX_THREADS_PER_CPU} per available CPU), got {n}")
    _kernels.request_threads(n)


def requested_threads():
    """What set_num_threads last set: an int, or None for OpenMP's default."""
    return _kernels.requested_threads() or None


# The number of threads the next kernel call will use at most. Kept in the
# compiled module: a Python-level function would cost a tenth of a small call.
get_num_threads = _kernels.num_threads
