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
