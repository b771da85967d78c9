"""Test configuration: a thread-count fixture (1 and 2 threads), a reset of
the process-wide thread count after every test, and a per-test seeded rng."""
import zlib

import numpy as np
import pytest

import pybn


@pytest.fixture(autouse=True)
def _restore_threads():
    pybn.set_num_threads(None)
    yield
    pybn.set_num_threads(None)


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    """Run the test with the kernels on 1 and on 2 threads."""
    pybn.set_num_threads(request.param)
    return request.param


@pytest.fixture
def rng(request):
    # A seed per test, stable across runs.
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
