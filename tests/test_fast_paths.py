"""The plain-case entry points of _kernels against functional.py's general
path: the same kernels must give bitwise the same results whichever path a
call takes, and anything that is not the plain case must fall through to
the general path (its conversions and its error messages)."""
import numpy as np
import pytest

import pybn
from pybn import _kernels

DTYPES = [np.float32, np.float64]


def _strided(a):
    """The same values in a non-contiguous array: the general path."""
    holder = np.empty(a.shape + (2,), a.dtype)
    holder[..., 0] = a
    view = holder[..., 0]
    assert not view.flags.c_contiguous or a.size <= 1
    return view


def _big_endian(a):
    return a.astype(a.dtype.newbyteorder(">"))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", [((7, 5), 1), ((3, 4, 5), 1), ((2, 3, 4, 5), -1), ((6, 2), 0)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_forward_fast_path_equals_general_path(dtype, shape, axis, training):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    channels = shape[axis]
    gamma, beta = rng.uniform(0.5, 2, channels).astype(dtype), rng.standard_normal(channels).astype(dtype)
    stats = [np.zeros(channels, dtype), np.ones(channels, dtype)]
    assert _kernels.batch_norm_forward(x, gamma, beta, *stats, training, 0.1, 1e-5, axis, None) is not None
    results = []
    for variant in (lambda a: a, _strided, _big_endian):
        rm, rv = (s.copy() for s in stats)
        out = pybn.batch_norm_forward(variant(x), gamma, beta, running_mean=rm, running_var=rv,
                                      training=training, axis=axis)
        results.append((out, rm, rv))
    (fast, rm_fast, rv_fast), *others = results
    for general, rm, rv in others:
        for a, b in zip(fast, general):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(rm_fast, rm)
        np.testing.assert_array_equal(rv_fast, rv)
    assert isinstance(pybn.batch_norm_forward(x), pybn.functional.BatchNormOutput)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_backward_fast_path_equals_general_path(dtype, training):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((9, 4, 3)).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    gamma = rng.uniform(0.5, 2, 4).astype(dtype)
    _, mean, invstd = pybn.batch_norm_forward(x, gamma)
    fast = pybn.batch_norm_backward(dy, x, gamma, mean, invstd, training=training)
    general = pybn.batch_norm_backward(_strided(dy), x, gamma, mean, invstd, training=training)
    for a, b in zip(fast, general):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (5, 17), (3, 4, 33)])
def test_softmax_fast_path_equals_general_path(dtype, shape):
    z = (np.random.default_rng(2).standard_normal(shape) * 5).astype(dtype)
    for fn in (pybn.softmax, pybn.log_softmax):
        fast = fn(z)
        for general in (fn(_strided(z)), fn(_big_endian(z)), fn(z, out=np.empty_like(z))):
            np.testing.assert_array_equal(fast, general)
        np.testing.assert_array_equal(fn(z, axis=len(shape) - 1), fast)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_fast_path_equals_general_path(dtype, reduction):
    rng = np.random.default_rng(3)
    z = (rng.standard_normal((40, 7)) * 4).astype(dtype)
    labels = rng.integers(0, 7, 40)
    probs = rng.dirichlet(np.ones(7), 40).astype(dtype)
    for target, general_target in ((labels, labels.astype(np.int32)), (probs, _strided(probs))):
        loss, dz = pybn.softmax_cross_entropy(z, target, reduction=reduction, label_smoothing=0.1)
        loss2, dz2 = pybn.softmax_cross_entropy(_strided(z), general_target, reduction=reduction,
                                                label_smoothing=np.float64(0.1))
        assert np.asarray(loss).dtype == dtype and np.asarray(loss2).dtype == dtype
        np.testing.assert_array_equal(loss, loss2)
        np.testing.assert_array_equal(dz, dz2)


def test_plain_entry_points_decline_what_is_not_the_plain_case():
    x = np.ones((4, 3), np.float32)
    v = np.ones(3, np.float32)
    read_only = np.empty_like(x)
    read_only.flags.writeable = False
    base = np.ones(8, np.float32)
    masked = np.ma.masked_array(x, mask=np.zeros_like(x, bool))
    bn, bn_bwd, sm, ce = (_kernels.batch_norm_forward, _kernels.batch_norm_backward,
                          _kernels.softmax_family, _kernels.cross_entropy)
    declined = [
        bn(x, v, v, None, None, 1, 0.1, 1e-5, 1, None),  # training not bool
        bn(x, v, v, None, None, "False", 0.1, 1e-5, 1, None),
        bn(x, v, v, None, None, True, 0.1, 1, 1, None),  # eps an int: converted first
        bn(x, v, v, None, None, True, 0.1, 1e-5, True, None),
        bn(x, v, v, None, None, True, 0.1, 1e-5, 2, None),
        bn(x, v, v, None, None, True, 0.1, 1e-5, 2**70, None),
        bn(x, v.astype(np.float64), v, None, None, True, 0.1, 1e-5, 1, None),
        bn(x, np.ones(4, np.float32), v, None, None, True, 0.1, 1e-5, 1, None),
        bn(x, v, v, None, None, False, 0.1, 1e-5, 1, None),  # eval needs stats
        bn(np.ones((0, 3), np.float32), v, v, None, None, True, 0.1, 1e-5, 1, None),
        bn(masked, v, v, None, None, True, 0.1, 1e-5, 1, None),  # a subclass: its mask
        bn(x, v, v, None, None, True, 0.1, 1e-5, 1, x),  # in place
        bn(x, v, v, None, None, True, 0.1, 1e-5, 1, np.empty((4, 3))),
        bn(x, v, v, None, None, True, 0.1, 1e-5, 1, np.empty((3, 4), np.float32)),
        bn(x, v, v, None, None, True, 0.1, 1e-5, 1, read_only),
        bn(x, v, None, v, np.ones(3, np.float32), True, 0.1, 1e-5, 1, None),  # running_mean is gamma
        bn(x, None, None, x[0], np.ones(3, np.float32), True, 0.1, 1e-5, 1, None),  # inside x
        bn(x, None, None, v, v, True, 0.1, 1e-5, 1, None),  # running_mean is running_var
        bn_bwd(x, x, v, v, v, True, 1, x),
        sm(0, x, None, -1, np.empty((4, 6), np.float32)[:, ::2]),
        sm(0, base[:6], None, -1, base[2:]),  # overlapping out
        bn(x.astype(np.int64), v, v, None, None, True, 0.1, 1e-5, 1, None),
        bn_bwd(x[:, :2], x, v, v, v, True, 1, None),
        bn_bwd(x, x, v, None, v, True, 1, None),
        sm(2, x, None, -1, None),  # a backward op needs the forward output
        sm(0, x, x, -1, None),  # a forward op takes none
        sm(0, np.float32(1.0), None, -1, None),
        sm(0, masked, None, -1, None),
        ce(x, np.array([0, 1, 2, 0], np.int32), "mean", 0.0, None),
        ce(x, np.zeros(4, np.int64), "avg", 0.0, None),
        ce(x, np.zeros(4, np.int64), "mean", 0, None),
        ce(x, x.astype(np.float64), "mean", 0.0, None),
        ce(x[None], np.zeros(4, np.int64), "mean", 0.0, None),
        ce(x, np.zeros(4, np.int64), "mean", 0.0, x),  # out overlaps logits
    ]
    assert all(d is None for d in declined), [i for i, d in enumerate(declined) if d is not None]
    # eval reads the running statistics only: sharing memory is harmless there
    assert bn(x, None, None, v, v, False, 0.1, 1e-5, 1, None) is not None


def test_plain_out_is_written_in_place_of_a_fresh_array():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((16, 5)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    out = np.empty_like(x)
    y = pybn.batch_norm_forward(x, out=out).y
    assert y is out
    np.testing.assert_array_equal(y, pybn.batch_norm_forward(x).y)
    _, mean, invstd = pybn.batch_norm_forward(x)
    dx = pybn.batch_norm_backward(dy, x, None, mean, invstd, out=out)[0]
    assert dx is out
    np.testing.assert_array_equal(dx, pybn.batch_norm_backward(dy, x, None, mean, invstd)[0])
    for fn in (pybn.softmax, pybn.log_softmax):
        assert fn(x, out=out) is out
        np.testing.assert_array_equal(out, fn(x))
    labels = np.arange(16) % 5
    loss, dz = pybn.softmax_cross_entropy(x, labels, out=out)
    assert dz is out
    np.testing.assert_array_equal(dz, pybn.softmax_cross_entropy(x, labels)[1])
    strided = np.empty((16, 10), np.float32)[:, ::2]
    assert pybn.softmax_cross_entropy(x, labels, out=strided)[1] is strided
    np.testing.assert_array_equal(strided, dz)
    # in place: the general path computes into a fresh array, then copies
    expected = pybn.softmax(x)
    assert pybn.softmax(x, out=x) is x
    np.testing.assert_array_equal(x, expected)


def test_read_only_running_stats_still_raise_when_training():
    x = np.ones((4, 3))
    rm = np.zeros(3)
    rm.flags.writeable = False
    with pytest.raises(ValueError, match="running_mean"):
        pybn.batch_norm_forward(x, running_mean=rm, running_var=np.ones(3))
    y, _, _ = pybn.batch_norm_forward(x, running_mean=rm, running_var=np.ones(3), training=False)
    assert y.shape == x.shape


def test_cross_entropy_rejects_an_out_that_does_not_fit():
    z = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"out: expected shape \(3, 4\) and dtype float64"):
        pybn.softmax_cross_entropy(z, np.zeros(3, int), out=np.empty((3, 4), np.float32))
    with pytest.raises(TypeError, match="out: expected a numpy array"):
        pybn.softmax_cross_entropy(z, np.zeros(3, int), out=[0.0] * 12)


def _misaligned(shape, dtype=np.float32):
    """A writeable C-contiguous array one byte off its element alignment."""
    count = int(np.prod(shape))
    buf = np.zeros(count * np.dtype(dtype).itemsize + 1, np.uint8)
    a = np.frombuffer(buf.data, dtype=dtype, count=count, offset=1).reshape(shape)
    assert not a.flags.aligned and a.flags.c_contiguous and a.flags.writeable
    return a


@pytest.mark.parametrize("cache_bytes", [None, "64"])
def test_misaligned_arrays_are_copied_not_handed_to_c(cache_bytes, tmp_path):
    # numpy allows float arrays at any byte address (np.frombuffer with an
    # offset); C may assume element alignment (vector code, streaming
    # stores: a misaligned streamed output crashed). Inputs are copied,
    # outputs written through an aligned array; the bits are the same. With
    # a tiny cache the streaming paths run too (in a subprocess).
    import os
    import subprocess
    import sys
    code = (
        "import numpy as np, pybn\n"
        "from test_fast_paths import _misaligned\n"
        "rng = np.random.default_rng(0)\n"
        "for shape in [(33, 70), (3, 8, 9, 11)]:\n"
        "    x = rng.standard_normal(shape).astype(np.float32)\n"
        "    xm, out = _misaligned(shape), _misaligned(shape)\n"
        "    xm[...] = x\n"
        "    want = pybn.batch_norm_forward(x)\n"
        "    got = pybn.batch_norm_forward(xm, out=out)\n"
        "    assert got.y is out and np.array_equal(out, want.y) and np.array_equal(got.mean, want.mean)\n"
        "    dx = pybn.batch_norm_backward(xm, xm, None, want.mean, want.invstd, out=_misaligned(shape))[0]\n"
        "    assert np.array_equal(dx, pybn.batch_norm_backward(x, x, None, want.mean, want.invstd)[0])\n"
        "    rm, rv = _misaligned((shape[1],)), _misaligned((shape[1],))\n"
        "    rm[...], rv[...] = 0, 1\n"
        "    pybn.batch_norm_forward(xm, running_mean=rm, running_var=rv)\n"
        "    rm2, rv2 = np.zeros(shape[1], np.float32), np.ones(shape[1], np.float32)\n"
        "    pybn.batch_norm_forward(x, running_mean=rm2, running_var=rv2)\n"
        "    assert np.array_equal(rm, rm2) and np.array_equal(rv, rv2)\n"
        "    for fn in (pybn.softmax, pybn.log_softmax):\n"
        "        assert np.array_equal(fn(xm, out=_misaligned(shape)), fn(x))\n"
        "z = rng.standard_normal((33, 70)).astype(np.float32)\n"
        "zm = _misaligned(z.shape)\n"
        "zm[...] = z\n"
        "labels = np.arange(33) % 70\n"
        "lm = _misaligned((33,), np.int64)\n"
        "lm[...] = labels\n"
        "loss, dz = pybn.softmax_cross_entropy(zm, lm, out=_misaligned(z.shape))\n"
        "want_loss, want_dz = pybn.softmax_cross_entropy(z, labels)\n"
        "assert loss == want_loss and np.array_equal(dz, want_dz)\n"
        "print('ok')\n")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(__file__))
    if cache_bytes:
        env["PYBN_CACHE_BYTES"] = cache_bytes
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


def test_entry_points_decline_misaligned_arrays():
    x = _misaligned((4, 3))
    assert _kernels.batch_norm_forward(x, None, None, np.zeros(3, np.float32), np.ones(3, np.float32),
                                       False, 0.1, 1e-5, 1, None) is None
    assert _kernels.softmax_family(0, x, None, -1, None) is None
    assert _kernels.cross_entropy(x, np.zeros(4, np.int64), "mean", 0.0, None) is None
