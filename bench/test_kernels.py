"""Every kernel at every shape of pybn.bench.SHAPES, implementations side by
side in one group per kernel|shape|dtype|threads."""
import numpy as np
import pytest

from pybn.bench import SHAPES, make_case

CASES = [(kernel, shape) for kernel, shapes in SHAPES.items() for shape in shapes]
IMPLS = ["pybn", "pybn out=", "torch", "reference"]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("kernel,shape", CASES, ids=[f"{k}-{'x'.join(map(str, s))}" for k, s in CASES])
def test_kernel(benchmark, kernel, shape, dtype, impl, threads):
    case = make_case(kernel, shape, dtype)
    if impl not in case.impls:
        pytest.skip(f"{impl} is not available for {kernel}")
    size = int(np.prod(shape))
    if impl == "reference" and size > 1 << 20:
        pytest.skip("the reference is too slow for the large shapes here; `pybn bench` times it")
    benchmark.group = f"{kernel}|{'x'.join(map(str, shape))}|{np.dtype(dtype).name}|{threads}t"
    benchmark.extra_info["min_bytes"] = case.min_bytes
    fn = case.impls[impl]
    if size < 1 << 16:  # tiny calls: many rounds per measurement
        benchmark.pedantic(fn, rounds=200, iterations=10, warmup_rounds=5)
    else:
        benchmark(fn)
