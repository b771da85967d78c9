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


def _info_line(env_extra, tmp_path, key="softmax rows"):
    import os
    env = {k: v for k, v in os.environ.items() if k not in ("PYBN_CACHE_BYTES", "PYBN_BN_SHORT_PLANES")}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-m", "pybn", "info"], capture_output=True, text=True,
                         check=True, cwd=tmp_path, env=env).stdout
    return next(line for line in out.splitlines() if line.startswith(key))


def _amd():
    with open("/proc/cpuinfo") as f:
        return "AuthenticAMD" in f.read()


def test_softmax_rows_stream_except_on_amd_unless_the_cache_is_overridden(tmp_path):
    # Streaming buffered softmax rows was measured to lose on an AMD EPYC
    # and to gain on an Intel Xeon (runtime.c); tests that force a tiny
    # cache must still run the streamed path on any CPU.
    amd = _amd()
    default = _info_line({}, tmp_path)
    assert ("plain stores" in default) == amd, default
    assert "streamed out of a buffer" in _info_line({"PYBN_CACHE_BYTES": "64"}, tmp_path)


def test_bn_backward_short_planes_run_in_memory_order_on_amd_unless_told(tmp_path):
    # Strided reads of one channel's planes were measured to lose on an AMD
    # EPYC (runtime.c); PYBN_BN_SHORT_PLANES forces either schedule.
    line = _info_line({}, tmp_path, "bn backward")
    assert ("memory order" in line) == _amd(), line
    assert "one channel at a time" in _info_line({"PYBN_BN_SHORT_PLANES": "channel"}, tmp_path, "bn backward")
    assert "memory order" in _info_line({"PYBN_BN_SHORT_PLANES": "planes"}, tmp_path, "bn backward")
