"""Shared test helpers: the one dtype-aware tolerance, comparisons and a
finite-difference gradient check."""
import numpy as np

# Kernels and references both compute in double and round once, so they
# agree to a few ulps of the output dtype; comparisons with PyTorch (which
# computes float32 partly in float) get the same bound scaled by the data.
_TOLERANCE = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-10}


def tolerance(dtype):
    """Relative (and, scaled by the data's magnitude, absolute) tolerance."""
    return _TOLERANCE[np.dtype(dtype)]


def assert_close(actual, expected, dtype=None, scale=1.0, factor=1.0):
    """Equal within the dtype's tolerance; NaN and inf must match exactly."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    tol = tolerance(dtype or actual.dtype) * factor
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale, equal_nan=True)


def numerical_directional_derivative(f, x, direction, h):
    """4th-order central difference of the scalar f along `direction`."""
    def at(t):
        return f(x + t * direction)
    return (-at(2 * h) + 8 * at(h) - 8 * at(-h) + at(-2 * h)) / (12 * h)


def check_gradient(f, x, grad, rng, n_directions=4, h=1e-4, rtol=1e-6):
    """grad == dF/dx for the scalar function f, along random directions
    (float64 only: a float32 difference quotient is too coarse to judge)."""
    x = np.asarray(x, np.float64)
    for _ in range(n_directions):
        v = rng.standard_normal(x.shape)
        numeric = numerical_directional_derivative(f, x, v, h)
        analytic = float(np.sum(grad * v))
        assert abs(numeric - analytic) <= rtol * max(1.0, abs(numeric), abs(analytic)), (numeric, analytic)


def skip_unless_cpu_runs(level):
    """Skip a test of a capped SIMD level ("avx2") the CPU cannot run; the
    portable level ("baseline") and the native one run everywhere."""
    import pytest

    from pybn import _kernels
    native = _kernels.build_info()["simd"]
    if level == "avx2" and not native.startswith(("x86-64-v3", "x86-64-v4")):
        pytest.skip(f"the CPU has no AVX2 (the kernels dispatch to {native})")


def streamed_and_cached(script_text, level, tmp_path):
    """Run a script (it saves its results to the .npz path it is given)
    twice in fresh processes at SIMD level `level`: with every kernel call
    streaming its output past a 64-byte "cache", and with none streaming.
    Returns (streamed, cached), checked to hold the same arrays bit for bit."""
    import os
    import subprocess
    import sys
    skip_unless_cpu_runs(level)
    script = tmp_path / "streamed.py"
    script.write_text(script_text)
    results = {}
    for cache in ("64", "1e15"):
        env = dict(os.environ, PYBN_CACHE_BYTES=cache)
        if level == "avx2":
            env["PYBN_SIMD"] = "avx2"
        path = tmp_path / f"{cache}.npz"
        run = subprocess.run([sys.executable, str(script), str(path)], env=env, capture_output=True,
                             text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        results[cache] = np.load(path, allow_pickle=False)
    streamed, cached = results["64"], results["1e15"]
    assert sorted(streamed.files) == sorted(cached.files)
    differing = {k: int(np.sum(streamed[k].view(np.uint8) != cached[k].view(np.uint8)))
                 for k in streamed.files}
    assert not any(differing.values()), {k: v for k, v in differing.items() if v}
    return streamed, cached
