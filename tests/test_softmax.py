"""Softmax-family kernels against reference.py: dtypes, axes, class counts,
strides, threads, extreme values, gradients, invariants and bad input."""
import numpy as np
import pytest

import pybn
from pybn import reference as ref
from helpers import assert_close, check_gradient, skip_unless_cpu_runs, streamed_and_cached, tolerance

DTYPES = [np.float32, np.float64]

SHAPES_AXES = [
    ((1,), -1),
    ((5,), 0),
    ((1, 1), -1),
    ((1, 7), -1),
    ((3, 2), -1),
    ((64, 10), -1),
    ((8, 1000), -1),
    ((2, 50_000), -1),
    ((3000, 3), -1),
    ((10, 3), 0),
    ((4, 6, 5), 1),
    ((4, 6, 130), 1),
    ((2, 3, 4, 5), 2),
    ((2, 3, 4, 5), 0),
]

FORWARD_OPS = [("softmax", pybn.softmax, ref.softmax), ("log_softmax", pybn.log_softmax, ref.log_softmax)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", SHAPES_AXES)
@pytest.mark.parametrize("name,op,op_ref", FORWARD_OPS, ids=[f[0] for f in FORWARD_OPS])
def test_forward_matches_reference(name, op, op_ref, shape, axis, dtype, threads, rng):
    z = (rng.standard_normal(shape) * 5).astype(dtype)
    got = op(z, axis=axis)
    assert got.dtype == dtype and got.flags.c_contiguous
    assert_close(got, op_ref(z, axis=axis), scale=10 if name == "log_softmax" else 1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", SHAPES_AXES)
def test_backward_matches_reference(shape, axis, dtype, threads, rng):
    z = (rng.standard_normal(shape) * 3).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    p = pybn.softmax(z, axis=axis)
    lp = pybn.log_softmax(z, axis=axis)
    assert_close(pybn.softmax_backward(g, p, axis=axis), ref.softmax_backward(g, p, axis=axis), scale=4)
    assert_close(pybn.log_softmax_backward(g, lp, axis=axis),
                 ref.log_softmax_backward(g, lp, axis=axis), scale=4 * np.sqrt(shape[axis]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_invariants_rows_sum_to_one_and_shift_invariance(dtype, rng):
    z = (rng.standard_normal((50, 33)) * 4).astype(dtype)
    p = pybn.softmax(z)
    assert_close(p.sum(axis=1), np.ones(50, dtype), factor=4)
    assert_close(pybn.softmax(z + dtype(100)), p, factor=200)
    assert_close(np.exp(pybn.log_softmax(z).astype(np.float64)), p.astype(np.float64), dtype, factor=10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_extreme_values(dtype):
    big = np.finfo(dtype).max
    z = np.array([
        [1e4, -1e4, 0.0],          # large but representable: exact one-hot
        [big, big, -big],           # max float: no overflow, two equal halves
        [-np.inf, 0.0, 0.0],        # -inf entry: probability 0
        [-np.inf, -np.inf, -np.inf],  # all -inf: NaN (as PyTorch)
        [np.inf, 0.0, 1.0],         # +inf: NaN
        [np.nan, 0.0, 1.0],         # NaN: NaN
        [-big, -big, -big],         # uniform
    ], dtype)
    p = pybn.softmax(z)
    lp = pybn.log_softmax(z)
    np.testing.assert_array_equal(p[0], [1, 0, 0])
    np.testing.assert_array_equal(lp[0], [0, -2e4, -1e4])
    np.testing.assert_array_equal(p[1], [0.5, 0.5, 0])
    assert_close(lp[1, :2], [np.log(0.5)] * 2)
    np.testing.assert_array_equal(p[2], [0, 0.5, 0.5])
    assert lp[2, 0] == -np.inf
    for row in (3, 4, 5):
        assert np.isnan(p[row]).all() and np.isnan(lp[row]).all()
    assert_close(p[6], [1 / 3] * 3)
    assert np.isfinite(p[[0, 1, 2, 6]]).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_strided_readonly_and_out(dtype, threads, rng):
    z = rng.standard_normal((30, 40)).astype(dtype)[::3, ::2]
    ro = np.ascontiguousarray(z)
    ro.flags.writeable = False
    want = ref.softmax(np.ascontiguousarray(z))
    assert_close(pybn.softmax(z), want)
    np.testing.assert_array_equal(pybn.softmax(ro), pybn.softmax(z))
    out = np.empty(z.shape, dtype)
    assert pybn.softmax(z, out=out) is out
    assert_close(out, want)
    strided_out = np.empty((10, 40), dtype)[:, ::2]
    pybn.log_softmax(z, out=strided_out)
    assert_close(strided_out, ref.log_softmax(np.ascontiguousarray(z)), scale=10)
    in_place = np.array(z)
    pybn.softmax(in_place, out=in_place)
    assert_close(in_place, want)
    dz_out = np.empty(z.shape, dtype)
    assert pybn.softmax_backward(z, want, out=dz_out) is dz_out


def test_empty_arrays_give_empty_results():
    assert pybn.softmax(np.empty((0, 5))).shape == (0, 5)
    assert pybn.log_softmax(np.empty((3, 0)), axis=1).shape == (3, 0)


@pytest.mark.parametrize("shape,axis", [((4, 5), -1), ((3, 4, 2), 1), ((6, 3), 0)])
def test_gradients_match_finite_differences(shape, axis, rng):
    z = rng.standard_normal(shape)
    w = rng.standard_normal(shape)
    check_gradient(lambda z_: float(np.sum(w * pybn.softmax(z_, axis=axis))), z,
                   pybn.softmax_backward(w, pybn.softmax(z, axis=axis), axis=axis), rng)
    check_gradient(lambda z_: float(np.sum(w * pybn.log_softmax(z_, axis=axis))), z,
                   pybn.log_softmax_backward(w, pybn.log_softmax(z, axis=axis), axis=axis), rng)


# ---- fused cross-entropy ------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (7, 2), (64, 10), (8, 1000), (2, 50_000), (3000, 3)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 1.0])
def test_cross_entropy_matches_reference(shape, reduction, smoothing, dtype, threads, rng):
    z = (rng.standard_normal(shape) * 3).astype(dtype)
    labels = rng.integers(0, shape[1], shape[0])
    probs = rng.dirichlet(np.ones(shape[1]), size=shape[0]).astype(dtype)
    for target in (labels, probs):
        loss, dz = pybn.softmax_cross_entropy(z, target, reduction=reduction, label_smoothing=smoothing)
        loss_ref, dz_ref = ref.softmax_cross_entropy(z, target, reduction=reduction,
                                                     label_smoothing=smoothing)
        assert np.asarray(loss).dtype == dtype and dz.dtype == dtype
        assert_close(loss, loss_ref, scale=10)
        assert_close(dz, dz_ref)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_is_logsumexp_minus_target_logit(dtype, rng):
    z = (rng.standard_normal((20, 7)) * 3).astype(dtype)
    y = rng.integers(0, 7, 20)
    loss, dz = pybn.softmax_cross_entropy(z, y, reduction="none")
    zd = z.astype(np.float64)
    lse = np.log(np.exp(zd).sum(1))
    assert_close(loss, (lse - zd[np.arange(20), y]).astype(dtype), scale=10)
    # dz = yhat - y: the course's gradient, rows sum to zero
    assert_close(dz, (pybn.softmax(z).astype(np.float64) - pybn.one_hot(y, 7)).astype(dtype))
    assert_close(dz.sum(1), np.zeros(20, dtype), factor=10)


def test_cross_entropy_extreme_logits():
    z = np.array([[1e4, -1e4, 0], [-np.inf, 0, 0], [3e38, -3e38, 0]], np.float32)
    loss, dz = pybn.softmax_cross_entropy(z, np.array([0, 1, 2]), reduction="none")
    np.testing.assert_array_equal(loss[0], 0)
    assert_close(loss[1], np.log(2))
    assert loss[2] == np.float32(3e38)
    assert np.isfinite(dz).all()
    # smoothing puts mass on the -inf logit: an infinite loss, as PyTorch
    loss, _ = pybn.softmax_cross_entropy(z[1:2], np.array([1]), label_smoothing=0.1)
    assert loss == np.inf


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
@pytest.mark.parametrize("probabilities", [False, True])
def test_cross_entropy_gradient_matches_finite_differences(smoothing, probabilities, rng):
    z = rng.standard_normal((6, 4)) * 2
    target = rng.dirichlet(np.ones(4), 6) if probabilities else rng.integers(0, 4, 6)
    _, dz = pybn.softmax_cross_entropy(z, target, label_smoothing=smoothing)
    check_gradient(lambda z_: float(pybn.softmax_cross_entropy(z_, target, label_smoothing=smoothing)[0]),
                   z, dz, rng)


def test_one_hot():
    np.testing.assert_array_equal(pybn.one_hot([2, 0], 3), [[0, 0, 1], [1, 0, 0]])
    assert pybn.one_hot(np.array([1]), 2, dtype=np.float32).dtype == np.float32
    with pytest.raises(ValueError, match=r"labels: label 3 at row 1 is outside \[0, 3\)"):
        pybn.one_hot([0, 3], 3)
    with pytest.raises(ValueError, match="num_classes: expected an int >= 1"):
        pybn.one_hot([0], 0)
    with pytest.raises(TypeError, match="labels: expected integer labels"):
        pybn.one_hot([0.5], 2)


# ---- bad input ------------------------------------------------------------------------

@pytest.mark.parametrize("op", [pybn.softmax, pybn.log_softmax])
def test_softmax_bad_input(op):
    with pytest.raises(ValueError, match="z: expected an array with at least 1 dimension"):
        op(np.float64(1.0))
    with pytest.raises(ValueError, match="axis: 2 is out of range"):
        op(np.ones((2, 2)), axis=2)
    with pytest.raises(TypeError, match="axis: expected an int"):
        op(np.ones((2, 2)), axis=None)
    with pytest.raises(TypeError, match="z: expected a float32 or float64"):
        op(np.ones((2, 2), bool))
    with pytest.raises(TypeError, match="z: expected a float32 or float64"):
        op(np.ones((2, 2), np.complex128))
    with pytest.raises(ValueError, match="out: expected shape"):
        op(np.ones((2, 2)), out=np.empty((2, 2), np.float32))
    with pytest.raises(TypeError, match="out: expected a numpy array"):
        op(np.ones((2, 2)), out=[[0, 0], [0, 0]])


def test_softmax_backward_bad_input():
    with pytest.raises(ValueError, match=r"p: expected shape \(2, 3\) like dp"):
        pybn.softmax_backward(np.ones((2, 3)), np.ones((3, 2)))
    with pytest.raises(TypeError, match="lp: expected dtype float64"):
        pybn.log_softmax_backward(np.ones((2, 3)), np.ones((2, 3), np.float32))


@pytest.mark.parametrize("logits,target,kwargs,exc,match", [
    (np.zeros((3, 4)), np.array([0, 4, 1]), {}, ValueError, r"target: label 4 at row 1 is outside \[0, 4\)"),
    (np.zeros((3, 4)), np.array([0, -1, 1]), {}, ValueError, "target: label -1 at row 1"),
    (np.zeros((3, 4)), np.array([0, 1]), {}, ValueError, r"target: expected integer labels of shape \(3,\)"),
    (np.zeros((3, 4)), np.array([0.0, 1.0, 2.0]), {}, ValueError,
     r"target: expected probabilities of shape \(3, 4\) \(integer class labels have shape \(m,\)\)"),
    (np.zeros((3, 4)), np.zeros((3, 5)), {}, ValueError, r"target: expected probabilities of shape \(3, 4\)"),
    (np.zeros((3, 4)), np.array([True, False, True]), {}, TypeError, "target: expected integer labels or float"),
    (np.zeros((3, 4)), np.array([0, 1, 2]), {"reduction": "avg"}, ValueError, "reduction: expected one of"),
    (np.zeros((3, 4)), np.array([0, 1, 2]), {"label_smoothing": 1.5}, ValueError,
     r"label_smoothing: expected a number in \[0, 1\]"),
    (np.zeros((3, 4)), np.array([0, 1, 2]), {"label_smoothing": -0.1}, ValueError, "label_smoothing"),
    (np.zeros((3, 0)), np.array([0, 1, 2]), {}, ValueError, "logits: expected at least one class"),
    (np.zeros((0, 3)), np.array([], int), {}, ValueError, "logits: expected at least one row"),
    (np.zeros(4), np.array([0]), {}, ValueError, r"logits: expected a 2-D array \(m, C\)"),
    (np.zeros((3, 4), complex), np.array([0, 1, 2]), {}, TypeError, "logits: expected a float32 or float64"),
])
def test_cross_entropy_bad_input(logits, target, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        pybn.softmax_cross_entropy(logits, target, **kwargs)


def test_kernel_layer_rejects_bad_labels_with_status_not_crash():
    from pybn import _kernels
    loss = np.empty(2)
    with pytest.raises(ValueError, match=r"target: label 9 at row 1 is outside \[0, 3\)"):
        _kernels.cross_entropy(np.zeros((2, 3)), np.array([0, 9]), "mean", 0.0, None)
    with pytest.raises(ValueError, match=r"target: label -1 at row 0 is outside \[0, 3\)"):
        pybn.softmax_cross_entropy(np.zeros((2, 3), np.float32)[:, ::-1], np.array([-1, 0], np.int8))
    with pytest.raises(ValueError, match=r"label_smoothing: expected a number in \[0, 1\], got 2.0"):
        _kernels.cross_entropy(np.zeros((2, 3)), np.array([0, 1]), "mean", 2.0, None)
    assert loss.shape == (2,)


@pytest.mark.parametrize("level", ["avx2", "baseline"])
def test_every_simd_path_matches_the_reference(level, tmp_path):
    # The float row pipeline has AVX-512, AVX2 and portable versions; run
    # the lower ones in a subprocess with the dispatch capped. Widths cover
    # each vector length's full, partial and multi-block cases; the rows
    # cover NaN rows, underflow to 0 and -inf entries.
    import subprocess
    import sys
    skip_unless_cpu_runs(level)
    code = (
        "import numpy as np, pybn, pybn._kernels as K\n"
        "from pybn import reference as ref\n"
        f"assert K.build_info()['simd'].startswith({'x86-64-v3' if level == 'avx2' else 'baseline'!r})\n"
        "rng = np.random.default_rng(0)\n"
        "for K_ in [1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 129, 1000]:\n"
        "    z = (rng.standard_normal((6, K_)) * 30).astype(np.float32)\n"
        "    z[0, 0] = -np.inf\n"
        "    z[1, -1] = np.nan\n"
        "    z[2, 0] = np.inf\n"
        "    z[3] = -np.inf\n"
        "    z[4, 0] = 200.0\n"
        "    for op in ('softmax', 'log_softmax'):\n"
        "        got, want = getattr(pybn, op)(z), getattr(ref, op)(z)\n"
        "        # probabilities: relative to themselves (exp below float's normal range is 0);\n"
        "        # log-probabilities: relative, or absolute next to 0\n"
        f"        np.testing.assert_allclose(got, want, rtol={tolerance(np.float32)}, equal_nan=True,\n"
        f"                                   atol=1e-37 if op == 'softmax' else {tolerance(np.float32)})\n"
        "    for target in (np.zeros(6, int), np.full(z.shape, 1.0 / K_, np.float32)):\n"
        "        loss, dz = pybn.softmax_cross_entropy(z[4:], target[4:], reduction='none')\n"
        "        loss_ref, dz_ref = ref.softmax_cross_entropy(z[4:], target[4:], reduction='none')\n"
        "        np.testing.assert_allclose(loss, loss_ref, rtol=2e-5, atol=2e-5)\n"
        "        np.testing.assert_allclose(dz, dz_ref, rtol=2e-5, atol=2e-5)\n"
        "print('ok')\n")
    import os
    env = dict(os.environ, PYBN_SIMD=level)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")


def test_float_exp_underflows_to_zero_without_flushing_larger_values():
    # The vectorized exp clamps its argument instead of comparing: exp is
    # exactly 0 well below float's normal range and accurate above it.
    z = np.array([[0.0, -80.0, -87.0, -90.0, -1e4, -np.inf]], np.float32)
    p = pybn.softmax(z)
    assert p[0, 0] == 1.0
    np.testing.assert_allclose(p[0, 1:3], np.exp(np.array([-80.0, -87.0])), rtol=1e-5)
    assert np.all(p[0, 3:] == 0.0)


def test_log_softmax_backward_takes_any_log_probabilities():
    # The float backward's vectorized exp covers lp <= 88; lanes above it
    # (finite up to 88.72, then inf) and NaN take the full-range exp. CI runs
    # this at the AVX2 and portable levels too.
    lp = np.array([[-np.inf, -1e30, -100, -87.5, -1, 0, 50, 87.9, 88.2, 88.7, 89, 1e30, np.inf, np.nan,
                    3.0, -2.5, 0.5]], np.float32)
    lp = np.repeat(lp, 3, axis=0)
    lp[1] = np.roll(lp[1], 5)  # the odd lanes at other SIMD positions
    lp[2, :10] = -1.0
    g = np.full(lp.shape, 0.5 / lp.shape[1], np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        want = g - np.exp(lp) * g.sum(axis=1, keepdims=True)  # float32 arithmetic, as the kernel
    got = pybn.log_softmax_backward(g, lp)
    assert_close(got, want)
    assert np.isinf(got[0, lp[0] > 88.73]).all() and np.isnan(got[0, np.isnan(lp[0])]).all()


def test_double_exp_is_within_an_ulp_or_two_over_its_range():
    # float64 runs a vectorizable exp of its own (common.h), not libm's
    # scalar one: within 2 ulp of NumPy's exp from -707 to 0 (CI runs this
    # with the default clone too), exactly 0 below about -707.7 (results
    # under 4.5e-308), NaN kept. The log-softmax backward with g = (0, -1)
    # returns dz_0 = g_0 - exp(lp_0) * sum(g) = exp(lp_0): the exp itself.
    x = -np.concatenate([np.linspace(0, 707, 200001), np.geomspace(1e-300, 1, 1000)])
    g = np.zeros((x.size, 2))
    g[:, 1] = -1.0
    dz = pybn.log_softmax_backward(g, np.stack([x, np.zeros_like(x)], axis=1))
    expected = np.exp(x)
    ulps = np.abs(dz[:, 0] - expected) / np.spacing(expected)
    assert ulps.max() <= 2.0, (ulps.max(), x[ulps.argmax()])
    tail = pybn.log_softmax_backward(np.array([[0.0, -1.0]] * 3), np.array([[-707.8, 0], [-745, 0], [np.nan, 0]]))
    assert tail[0, 0] == 0.0 and tail[1, 0] == 0.0 and np.isnan(tail[2, 0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_keeps_log_sum_next_to_a_huge_max(dtype):
    # Found by hypothesis: lse = max + log(sum) rounds log(2) away next to
    # max float; the loss must be (max - z_y) + log(sum), as log_softmax.
    big = np.finfo(dtype).max
    logits = np.array([[big, big], [big, big]], dtype)
    for target in (np.array([0, 1]), np.full((2, 2), 0.5, dtype)):
        loss, dz = pybn.softmax_cross_entropy(logits, target, reduction="none")
        assert_close(loss, np.full(2, np.log(2), dtype))
        assert_close(dz, np.array([[-0.5, 0.5], [0.5, -0.5]], dtype) if target.ndim == 1 else np.zeros((2, 2), dtype))
    loss, _ = pybn.softmax_cross_entropy(logits, np.array([0, 1]), label_smoothing=0.2)
    assert_close(loss, dtype(np.log(2)))


_STREAMED_SOFTMAX = """
import sys, numpy as np, pybn
rng = np.random.default_rng(0)
# rows too short to stream, rows that fill the stream buffer (4096 floats /
# 2048 doubles) and longer ones, odd counts, a NaN row, a -inf entry
shapes = [(3000, 3), (7, 1024), (40, 1030), (5, 4096), (3, 4097), (2, 2048), (4, 10001), (1, 1),
          (9, 17)]
out = {}
for k, shape in enumerate(shapes):
    for dtype in (np.float32, np.float64):
        z = (rng.standard_normal(shape) * 4).astype(dtype)
        z[0, 0] = np.nan if shape[0] > 2 else z[0, 0]
        z[-1, -1] = -np.inf
        g = rng.standard_normal(shape).astype(dtype)
        labels = rng.integers(0, shape[1], shape[0])
        probs = rng.dirichlet(np.ones(shape[1]), shape[0]).astype(dtype)
        for threads in (1, 2):
            pybn.set_num_threads(threads)
            # an output that starts 4 bytes past a 64-byte line: the head of plain stores
            dst = np.empty(z.size + 1, dtype)[1:].reshape(shape)
            p = pybn.softmax(z)
            res = {"softmax": p, "log_softmax": pybn.log_softmax(z),
                   "softmax_offset": pybn.softmax(z, out=dst).copy(),
                   "softmax_backward": pybn.softmax_backward(g, p),
                   "log_softmax_backward": pybn.log_softmax_backward(g, pybn.log_softmax(z))}
            for s in (0.0, 0.1):
                loss, dz = pybn.softmax_cross_entropy(z, labels, reduction="none", label_smoothing=s)
                res[f"ce_labels_{s}"], res[f"ce_labels_{s}_loss"] = dz, loss
                loss, dz = pybn.softmax_cross_entropy(z, probs, reduction="none", label_smoothing=s)
                res[f"ce_probs_{s}"], res[f"ce_probs_{s}_loss"] = dz, loss
            for name, a in res.items():
                out[f"{k}_{np.dtype(dtype).name}_{threads}_{name}"] = a
np.savez(sys.argv[1], **out)
"""


@pytest.mark.parametrize("level", ["native", "avx2"])
def test_streamed_rows_give_the_bits_of_their_cached_twins(level, tmp_path):
    # Beyond the cache, rows of at least 4 KB are computed into a buffer and
    # streamed out (softmax_impl.h); longer log-softmax rows chunk by chunk
    # after their sum. The bits may not depend on the cache size.
    streamed, _ = streamed_and_cached(_STREAMED_SOFTMAX, level, tmp_path)
    for k in streamed.files:  # 1 and 2 threads agree too, and the offset output is the same
        if "_1_" in k:
            np.testing.assert_array_equal(streamed[k], streamed[k.replace("_1_", "_2_")])
        if k.endswith("softmax_offset"):
            np.testing.assert_array_equal(streamed[k], streamed[k.replace("_offset", "")])
