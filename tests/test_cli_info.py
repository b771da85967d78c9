"""`pybn info` and `python -m pybn info` report the build."""
import subprocess
import sys

from pybn.cli import main


def test_info_reports_version_openmp_threads_and_simd(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for key in ("pybn", "SIMD level", "OpenMP", "threads", "cache", "compiler", "C flags"):
        assert key in out
    assert "on (version" in out


def test_python_dash_m_pybn_info(tmp_path):
    # cwd away from the checkout, whose pybn/ folder has no compiled module
    out = subprocess.run([sys.executable, "-m", "pybn", "info"], capture_output=True, text=True,
                         check=True, cwd=tmp_path)
    assert "SIMD level" in out.stdout


def _info_line(env_extra, tmp_path):
    import os
    env = {k: v for k, v in os.environ.items() if k != "PYBN_CACHE_BYTES"}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-m", "pybn", "info"], capture_output=True, text=True,
                         check=True, cwd=tmp_path, env=env).stdout
    return next(line for line in out.splitlines() if line.startswith("softmax rows"))


def test_softmax_rows_stream_except_on_amd_unless_the_cache_is_overridden(tmp_path):
    # Streaming buffered softmax rows was measured to lose on an AMD EPYC
    # and to gain on an Intel Xeon (runtime.c); tests that force a tiny
    # cache must still run the streamed path on any CPU.
    with open("/proc/cpuinfo") as f:
        amd = "AuthenticAMD" in f.read()
    default = _info_line({}, tmp_path)
    assert ("plain stores" in default) == amd, default
    assert "streamed out of a buffer" in _info_line({"PYBN_CACHE_BYTES": "64"}, tmp_path)
