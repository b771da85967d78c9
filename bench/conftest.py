"""pytest-benchmark suites for the kernels, parametrized over pybn.bench's
cases: implementation (pybn, reference, torch when importable), shape,
dtype and threads. Run with `pytest bench/ --benchmark-group-by=group`.
Benchmarks measure; they never assert a speed."""
import pytest

import pybn


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    pybn.set_num_threads(request.param)
    try:
        import torch
        torch.set_num_threads(request.param)
    except ImportError:
        pass
    yield request.param
    pybn.set_num_threads(None)
