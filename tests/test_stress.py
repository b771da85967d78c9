"""Stress: many Python threads calling kernels while the thread count
changes under them; repeated calls that must not leak; (opt-in) arrays past
2**31 elements that exercise the 64-bit index paths."""
import gc
import os
import threading
import tracemalloc

import numpy as np
import pytest

import pybn


def _workload(rng_seed):
    rng = np.random.default_rng(rng_seed)
    x = rng.standard_normal((700, 96)).astype(np.float32)
    z = rng.standard_normal((300, 130)) * 5
    labels = rng.integers(0, 130, 300)
    return x, z, labels


def _run(x, z, labels):
    y, mean, invstd = pybn.batch_norm_forward(x)
    dx = pybn.batch_norm_backward(np.ones_like(x), x, None, mean, invstd)[0]
    loss, dz = pybn.softmax_cross_entropy(z, labels)
    return [y, dx, pybn.softmax(z, axis=0), pybn.log_softmax(z), dz, np.asarray(loss)]


def test_many_python_threads_while_the_thread_count_changes():
    inputs = [_workload(i) for i in range(4)]
    pybn.set_num_threads(1)
    expected = [_run(*args) for args in inputs]
    stop = threading.Event()
    failures = []

    def toggler():
        n = 0
        while not stop.is_set():
            pybn.set_num_threads(1 + n % 3)
            n += 1

    def worker(k):
        try:
            for i in range(25):
                got = _run(*inputs[(k + i) % 4])
                for a, b in zip(got, expected[(k + i) % 4]):
                    np.testing.assert_array_equal(a, b)
        except Exception as exc:  # reported in the main thread
            failures.append(exc)

    threads = [threading.Thread(target=toggler)] + [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads[1:]:
        t.join()
    stop.set()
    threads[0].join()
    assert not failures, failures[0]


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_repeated_calls_do_not_leak():
    args = _workload(0)
    for _ in range(50):  # warm up allocator pools and caches
        _run(*args)
    gc.collect()
    tracemalloc.start()
    rss_before = _rss_bytes()
    snapshot_before = tracemalloc.take_snapshot()
    for _ in range(1500):
        _run(*args)
    gc.collect()
    grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(snapshot_before, "filename"))
    tracemalloc.stop()
    rss_growth = _rss_bytes() - rss_before
    # every call allocates ~1 MB of outputs and C scratch; a leak of any of it
    # over 1500 calls would show as hundreds of MB
    assert grown < 1 << 20, grown
    if "asan" not in os.environ.get("LD_PRELOAD", ""):  # ASan quarantines freed memory
        assert rss_growth < 32 << 20, rss_growth


BIG = os.environ.get("PYBN_BIG_TESTS") == "1"


@pytest.mark.skipif(not BIG, reason="needs ~20 GB of memory: set PYBN_BIG_TESTS=1")
def test_more_than_2_to_the_31_elements():
    n = 2**31 + 37  # element offsets past int32 in every kernel's index arithmetic
    z = np.zeros((1, n), np.float32)
    z[0, -1] = 1.0
    p = pybn.softmax(z, out=z)  # in place: one array of 8.6 GB
    assert p[0, 0] > 0 and p[0, -1] > p[0, 0]
    np.testing.assert_allclose(float(p.sum(dtype=np.float64)), 1.0, rtol=1e-4)
    del p, z
    x = np.ones((n // 4, 4), np.float32)
    x[-1] = 3.0
    y, mean, _ = pybn.batch_norm_forward(x, out=x)
    assert np.isfinite(mean).all() and y[-1, 0] > 0 > y[0, 0]
