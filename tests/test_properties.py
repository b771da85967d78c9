"""Property-based tests (hypothesis): for random shapes, axes, strides,
dtypes, views and extreme values, every public kernel either equals the
reference within the dtype tolerance or raises a clear ValueError/TypeError.
Nothing else: no crash, no other exception, no silently wrong answer."""
import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import pybn
from pybn import reference as ref
from helpers import assert_close, tolerance

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DTYPES = st.sampled_from([np.float32, np.float64])


def _extreme_values(dtype):
    big = float(np.finfo(dtype).max)
    return st.one_of(
        st.floats(-30, 30, width=np.dtype(dtype).itemsize * 8),
        st.sampled_from([0.0, 1e4, -1e4, big, -big, np.inf, -np.inf, np.nan]),
    )


@st.composite
def arrays(draw, min_dims=1, extreme=True, min_side=0):
    dtype = draw(DTYPES)
    shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=4, min_side=min_side, max_side=7))
    elements = _extreme_values(dtype) if extreme else st.floats(-1e3, 1e3, width=np.dtype(dtype).itemsize * 8)
    a = draw(hnp.arrays(dtype, shape, elements=elements))
    view = draw(st.sampled_from(["plain", "transpose", "reversed", "readonly"]))
    if view == "transpose":
        a = a.T
    elif view == "reversed":
        a = a[::-1]
    elif view == "readonly":
        a.flags.writeable = False
    return a


def _scale(want):
    finite = np.abs(want[np.isfinite(want)])
    return max(1.0, float(finite.max())) if finite.size else 1.0


@SETTINGS
@given(z=arrays(), axis=st.integers(-5, 5), op=st.sampled_from(["softmax", "log_softmax"]))
def test_softmax_family_equals_reference_or_refuses(z, axis, op):
    try:
        got = getattr(pybn, op)(z, axis=axis)
    except (ValueError, TypeError):
        assert not -z.ndim <= axis < z.ndim
        return
    with np.errstate(all="ignore"):
        want = getattr(ref, op)(z, axis=axis)
    assert got.shape == z.shape and got.dtype == z.dtype
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert_close(got, want, scale=_scale(want), factor=2)


@SETTINGS
@given(z=arrays(extreme=False, min_side=1), axis=st.integers(-4, 3), data=st.data())
def test_softmax_backward_equals_reference(z, axis, data):
    axis = axis % z.ndim
    g = data.draw(hnp.arrays(z.dtype, z.shape, elements=st.floats(-10, 10, width=z.dtype.itemsize * 8)))
    p = pybn.softmax(z, axis=axis)
    lp = pybn.log_softmax(z, axis=axis)
    assert_close(pybn.softmax_backward(g, p, axis=axis), ref.softmax_backward(g, p, axis=axis), scale=10)
    want = ref.log_softmax_backward(g, lp, axis=axis)
    assert_close(pybn.log_softmax_backward(g, lp, axis=axis), want, scale=10 * _scale(want))


@SETTINGS
@example(x=np.full((2, 6, 7, 2), 994.4198715784221), axis=-1, training=True, affine=True, momentum=0.0,
         eps=1e-8)  # constant channels: y is beta to within the rounding of the mean, times 1/sqrt(eps)
@given(x=arrays(min_dims=2, extreme=False), axis=st.integers(-4, 4), training=st.booleans(),
       affine=st.booleans(),
       momentum=st.one_of(st.floats(0, 1), st.sampled_from([-0.1, 1.5, np.nan])),
       eps=st.one_of(st.floats(1e-8, 1e-1), st.sampled_from([0.0, -1e-5, np.inf, np.nan])))
def test_batch_norm_equals_reference_or_refuses(x, axis, training, affine, momentum, eps):
    valid_axis = -x.ndim <= axis < x.ndim
    channels = x.shape[axis] if valid_axis else 1
    per_channel = x.size // channels if valid_axis and channels else 0
    gamma = np.linspace(0.5, 2, channels).astype(x.dtype) if affine else None
    beta = np.linspace(-1, 1, channels).astype(x.dtype) if affine else None
    rm, rv = np.zeros(channels, x.dtype), np.ones(channels, x.dtype)
    try:
        y, mean, invstd = pybn.batch_norm_forward(x, gamma, beta, running_mean=rm, running_var=rv,
                                                  training=training, momentum=momentum, eps=eps,
                                                  axis=axis)
    except (ValueError, TypeError):
        assert (not valid_axis or not 0 <= momentum <= 1 or not 0 < eps < np.inf or channels == 0
                or per_channel < (2 if training else 1))
        return
    rm_ref, rv_ref = np.zeros(channels, x.dtype), np.ones(channels, x.dtype)
    want = ref.batch_norm_forward(x, gamma, beta, running_mean=rm_ref, running_var=rv_ref,
                                  training=training, momentum=momentum, eps=eps, axis=axis)
    # y = gamma * (x - mean) * invstd: the mean is known to eps * max|x|, so y
    # only to eps * max|x| * |gamma| * invstd (a constant channel with a tiny
    # eps amplifies it 1/sqrt(eps) times); the tolerance follows that bound
    gain = float(np.abs(gamma).max()) if affine else 1.0
    conditioning = float(np.abs(x).max()) * gain * float(np.max(want[2]))
    rounding = 64 * np.finfo(x.dtype).eps * conditioning / (10 * tolerance(x.dtype))
    scale = 4 * max(1.0, float(np.abs(want[0]).max()), rounding)
    assert_close(y, want[0], scale=scale, factor=10)
    assert_close(mean, want[1], scale=max(1.0, float(np.abs(x).max())))
    assert_close(rm, rm_ref, scale=max(1.0, float(np.abs(x).max())))
    # A random dy (dy = 1 makes the training dx exactly 0, so a wrong dx
    # could not be seen). Absolute tolerances follow the error analysis,
    # not the channel size: dx's sums are divided by n again, so its
    # rounding is eps * |gamma*invstd| * max|dy| * (1 + max|xhat|^2);
    # dgamma and dbeta are sums, off by eps times the sum of magnitudes.
    dy = np.random.default_rng(x.size).standard_normal(x.shape).astype(x.dtype)
    got = pybn.batch_norm_backward(dy, x, gamma, mean, invstd, training=training, axis=axis)
    want_b = ref.batch_norm_backward(dy, x, gamma, mean, invstd, training=training, axis=axis)
    ax = axis % x.ndim
    shape = [1] * x.ndim
    shape[ax] = -1
    xd = x.astype(np.float64)
    xhat = (xd - mean.astype(np.float64).reshape(shape)) * invstd.astype(np.float64).reshape(shape)
    g_istd = np.abs((1.0 if gamma is None else gamma.astype(np.float64)) * invstd.astype(np.float64))
    dx_scale = float(np.max(g_istd)) * float(np.abs(dy).max()) * (1 + float(np.max(xhat ** 2)))
    others = tuple(i for i in range(x.ndim) if i != ax)
    assert_close(got[0], want_b[0], scale=max(dx_scale, 1e-30), factor=10)
    # dgamma = invstd * sum(dy * (x - mean)): where x - mean is subnormal
    # (a constant channel near the smallest normal), each product rounds to
    # the subnormal grid and invstd (up to 1/sqrt(eps)) scales that up: a
    # floor of n * invstd smallest subnormals (hypothesis found 1.8e-322 vs
    # 1.53e-322 for two equal values of 6e-308)
    tol = tolerance(x.dtype) * 10
    floor = float(np.finfo(x.dtype).smallest_subnormal) * float(np.max(g_istd)) * (x.size / len(mean)) / tol
    assert_close(got[1], want_b[1], scale=max(float(np.abs(dy * xhat).sum(axis=others).max()), floor), factor=10)
    assert_close(got[2], want_b[2], scale=float(np.abs(dy).sum(axis=others).max()), factor=10)


@SETTINGS
@given(logits=arrays(min_dims=2, extreme=True), data=st.data(),
       reduction=st.sampled_from(["mean", "sum", "none", "bogus"]),
       smoothing=st.sampled_from([0.0, 0.1, 1.0, -0.1, 2.0]))
def test_cross_entropy_equals_reference_or_refuses(logits, data, reduction, smoothing):
    rows = logits.shape[0]
    classes = logits.shape[1] if logits.ndim == 2 else 0
    labels = data.draw(hnp.arrays(np.int64, (rows,), elements=st.integers(-1, max(classes, 1))))
    try:
        loss, dz = pybn.softmax_cross_entropy(logits, labels, reduction=reduction,
                                              label_smoothing=smoothing)
    except (ValueError, TypeError):
        assert (logits.ndim != 2 or rows == 0 or classes == 0 or reduction == "bogus"
                or not 0 <= smoothing <= 1 or labels.min() < 0 or labels.max() >= classes)
        return
    with np.errstate(all="ignore"):
        loss_ref, dz_ref = ref.softmax_cross_entropy(logits, labels, reduction=reduction,
                                                     label_smoothing=smoothing)
    # NaN rows (a NaN, +inf or only -inf logits) are NaN in both
    np.testing.assert_array_equal(np.isnan(dz), np.isnan(dz_ref))
    assert_close(dz, dz_ref, factor=2)
    loss_ref = np.asarray(loss_ref)
    if np.isfinite(loss_ref).all():
        assert_close(loss, loss_ref, scale=_scale(loss_ref), factor=2)
