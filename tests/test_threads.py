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
    ("bn_rows_wide", (600, 2100), 1),  # maps take whole rows at 1 and 2 threads, column tiles at 3
    ("bn_planes", (16, 3, 61, 67), 1),  # 3 channels: one task per channel at 1 and 3 threads, planes at 2
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
    bound = pybn._threads.max_threads()
    assert bound == 4 * len(os.sched_getaffinity(0))
    pybn.set_num_threads(bound)
    with pytest.raises(ValueError, match=f"n: expected at most {bound} threads"):
        pybn.set_num_threads(bound + 1)
    with pytest.raises(ValueError, match="n: expected at most"):
        pybn.set_num_threads(1000)  # used to start 1000 OpenMP threads (and die under a memory limit)
    with pytest.raises(TypeError, match="n: expected an int >= 1 or None, got bool"):
        pybn.set_num_threads(True)
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
    # A Python thread counts while the main thread runs kernels. With a
    # switch interval (0.1 s) longer than a kernel call, the counter can
    # advance during a call only if the call released the GIL: a call
    # holding it (checked: a 10 ms Python loop) leaves it where it was.
    # Counted, not timed: the former version ("the main thread ticked more
    # than 5 times while two threads ran kernels") saw 5 on a CI run.
    import sys
    import threading
    pybn.set_num_threads(1)
    x = np.random.default_rng(3).standard_normal((2048, 2048)).astype(np.float32)
    gamma, beta = np.ones(2048, np.float32), np.zeros(2048, np.float32)
    count, stop = [0], threading.Event()

    def counter():
        while not stop.is_set():
            count[0] += 1

    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.1)
    thread = threading.Thread(target=counter)
    thread.start()
    try:
        advanced = {}
        for name, call in (("softmax", lambda: pybn.softmax(x)),
                           ("batch_norm_forward", lambda: pybn.batch_norm_forward(x, gamma, beta, training=True))):
            before = count[0]
            call()
            advanced[name] = count[0] - before
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)
    assert all(n > 0 for n in advanced.values()), advanced


def test_a_huge_omp_num_threads_is_capped_to_the_bound():
    code = ("import numpy as np, pybn\n"
            "x = np.random.default_rng(0).standard_normal((512, 256)).astype(np.float32)\n"
            "pybn.softmax(x); pybn.batch_norm_forward(x)\n"
            "print(pybn.get_num_threads(), pybn._threads.max_threads())")
    env = dict(os.environ, OMP_NUM_THREADS="1000")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60, cwd=os.path.dirname(__file__))
    assert out.returncode == 0, out.stderr
    got, bound = out.stdout.splitlines()[-1].split()
    assert got == bound


_FORK_AFTER_THREADS = """
import multiprocessing as mp, sys
import numpy as np, pybn
pybn.set_num_threads(2)
z = np.random.default_rng(0).standard_normal((512, 1024)).astype(np.float32)
want = pybn.softmax(z)  # starts an OpenMP team in the parent

def child(_):
    import pybn
    return (pybn.get_num_threads(), bool(np.array_equal(pybn.softmax(z), want)),
            bool(np.array_equal(pybn.batch_norm_forward(z).y, pybn.batch_norm_forward(z).y)))

if __name__ == "__main__":
    with mp.get_context("fork").Pool(2) as pool:
        print(pool.map(child, range(4)))
    print(pybn.get_num_threads())
"""


def test_fork_after_a_threaded_call_does_not_hang(tmp_path):
    # GNU OpenMP's pool does not survive fork: a child starting a team used
    # to hang for good. Children now run kernels on their calling thread.
    script = tmp_path / "fork_after_threads.py"
    script.write_text(_FORK_AFTER_THREADS)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    children, parent = out.stdout.strip().splitlines()[-2:]
    assert children == str([(1, True, True)] * 4)
    assert parent == "2"  # the parent keeps its threads


def test_every_pool_pybn_starts_uses_spawn(monkeypatch):
    # The package's own worker pools must not fork a process that ran OpenMP.
    import concurrent.futures as cf
    import inspect
    from pybn.tune import execution
    created = []

    class Recorder(cf.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            created.append(kwargs.get("mp_context"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(cf, "ProcessPoolExecutor", Recorder)
    execution.process_pool(1).shutdown()
    assert [ctx.get_start_method() for ctx in created] == ["spawn"]
    # and no other module starts processes some other way
    import pybn as package
    root = os.path.dirname(package.__file__)
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                text = open(os.path.join(folder, name)).read()
                for needle in ("ProcessPoolExecutor(", "multiprocessing.Pool(", "os.fork(", ".Process("):
                    if needle in text:
                        assert name == "execution.py" and needle == "ProcessPoolExecutor(", (name, needle)
    assert "spawn" in inspect.getsource(execution.process_pool)
