"""bench/ is not run by the test suite (it measures, and takes minutes), so
these check what can break it silently: its modules import against today's
pybn.bench, and every table names the machine it was measured on."""
import importlib.util
import pathlib

import numpy as np
import pytest

from pybn import bench
from pybn.cli import main

BENCH = pathlib.Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.parametrize("name", ["test_roofline", "test_kernels", "search_vs_optuna"])
def test_bench_modules_import(name):
    # a name they import from pybn that no longer exists fails here, not
    # first in a developer's `pytest bench/`
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


def test_cpu_model_is_the_model_name_linux_lists():
    model = bench.cpu_model()
    assert isinstance(model, str) and model
    try:
        lines = pathlib.Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    if names:
        assert model == names[0]


def test_the_kernel_table_names_the_cpu_threads_and_bandwidth():
    rows = [{"kernel": "softmax", "shape": (32, 64), "min_bytes": 16384, "pybn": 2e-6, "pybn out=": 1e-6,
             "torch": 4e-6, "reference": 3e-5}]
    table = bench.format_table(rows, 20e9, 2, have_torch=True)
    first = table.splitlines()[0]
    assert first.startswith(f"{bench.cpu_model()}, threads 2, float32, copy bandwidth 20.0 GB/s")
    assert "2.00x" in table  # torch 4 us / pybn 2 us
    assert np.isclose(bench.geomean([2.0, 8.0]), 4.0)
    # what `pybn bench` and bench/test_roofline.py print: the table, then the geometric means
    assert bench.report(rows, 20e9, 2).splitlines()[-2:] == [
        "geometric-mean speedup over PyTorch: 2.00x", "geometric-mean speedup over the NumPy reference: 15.0x"]


def test_info_names_the_cpu(capsys):
    assert main(["info"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("CPU"))
    assert line.split(None, 1)[1] == bench.cpu_model()
