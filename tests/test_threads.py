"""Threading contract: process-wide thread count, bitwise-identical results
for any thread count, GIL released, concurrent calls from Python threads."""
import concurrent.futures
import os
import subprocess
import sys

import numpy as np
import pytest

import pybn

# Large enough that the kernels really start a team of threads.
CASES = [
    ("bn_rows", (4099, 37), 1),
    ("bn_planes", (16, 3, 61, 67), 1),
    ("bn_channels_last", (8, 33, 35, 5), -1),
    ("softmax_rows", (1001, 257), -1),
    ("softmax_middle", (7, 300, 130), 1),
]


def _run_all(x, axis, rng_seed=0):
    rng = np.random.default_rng(rng_seed)
    dy = rng.standard_normal(x.shape).astype(x.dtype)
    results = []
    if x.ndim >= 2:
        channels = x.shape[axis]
        rm, rv = np.zeros(channels, x.dtype), np.ones(channels, x.dtype)
        y, mean, invstd = pybn.batch_norm_forward(x, running_mean=rm, running_var=rv, axis=axis)
        results += [y, mean, invstd, rm, rv]
        results += list(pybn.batch_norm_backward(dy, x, None, mean, invstd, axis=axis))
    p = pybn.softmax(x, axis=axis)
    results += [p, pybn.log_softmax(x, axis=axis), pybn.softmax_backward(dy, p, axis=axis)]
    if x.ndim == 2:
        labels = rng.integers(0, x.shape[1], x.shape[0])
        loss, dz = pybn.softmax_cross_entropy(x, labels, label_smoothing=0.1)
        results += [np.asarray(loss), dz]
    return results


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,shape,axis", CASES, ids=[c[0] for c in CASES])
def test_results_are_bitwise_identical_for_1_and_2_threads(name, shape, axis, dtype):
    x = (np.random.default_rng(1).standard_normal(shape) * 3 + 2).astype(dtype)
    pybn.set_num_threads(1)
    one = _run_all(x, axis)
    pybn.set_num_threads(2)
    two = _run_all(x, axis)
    pybn.set_num_threads(3)  # more threads than cores: still the same bits
    three = _run_all(x, axis)
    for a, b, c in zip(one, two, three):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_concurrent_calls_from_python_threads_match_sequential():
    rng = np.random.default_rng(2)
    inputs = [(rng.standard_normal((513, 129)) * (i + 1)).astype(np.float32) for i in range(8)]
    sequential = [_run_all(x, 1) for x in inputs]
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        concurrent_results = list(pool.map(lambda x: _run_all(x, 1), inputs * 3))
    for i, got in enumerate(concurrent_results):
        for a, b in zip(got, sequential[i % len(inputs)]):
            np.testing.assert_array_equal(a, b)


def test_set_num_threads_is_process_wide_and_validated():
    pybn.set_num_threads(1)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(pybn.get_num_threads).result() == 1
    pybn.set_num_threads(None)
    assert pybn.get_num_threads() >= 1
    with pytest.raises(ValueError, match="n: expected an int >= 1"):
        pybn.set_num_threads(0)
    with pytest.raises(ValueError, match="n: expected at most 32768 threads"):
        pybn.set_num_threads(10**12)
    with pytest.raises(TypeError, match="n: expected an int >= 1 or None"):
        pybn.set_num_threads(1.5)


def test_default_thread_count_honours_omp_num_threads_and_threadpoolctl():
    code = ("import pybn, threadpoolctl; a = pybn.get_num_threads()\n"
            "with threadpoolctl.threadpool_limits(1, user_api='openmp'):\n"
            "    b = pybn.get_num_threads()\n"
            "print(a, b)")
    env = dict(os.environ, OMP_NUM_THREADS="3")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(__file__))
    assert out.stdout.splitlines()[-1].split() == ["3", "1"]


def test_gil_is_released_during_kernels():
    # Two Python threads each running large kernels on one OpenMP thread
    # overlap only if the GIL is released: check they did overlap in time.
    import threading
    import time
    pybn.set_num_threads(1)
    x = np.random.default_rng(3).standard_normal((2048, 2048)).astype(np.float32)
    spans = []

    def work():
        start = time.perf_counter()
        for _ in range(5):
            pybn.softmax(x)
        spans.append((start, time.perf_counter()))

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    # Meanwhile the main thread must get the GIL back quickly.
    ticks = 0
    while any(t.is_alive() for t in threads):
        ticks += 1
        time.sleep(0.001)
    for t in threads:
        t.join()
    (s1, e1), (s2, e2) = spans
    assert min(e1, e2) > max(s1, s2)  # the two runs overlapped
    assert ticks > 5
