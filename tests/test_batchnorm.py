"""Batch-norm kernels against reference.py: dtypes, layouts, sizes, strides,
threads, train/eval, gradients by finite differences, invariants, bad input."""
import numpy as np
import pytest

import pybn
from pybn import reference as ref
from helpers import assert_close, check_gradient, skip_unless_cpu_runs, streamed_and_cached

DTYPES = [np.float32, np.float64]

# (shape, axis): 2-D to 5-D, channels first and channels last, odd sizes,
# two rows, one channel, one column, large N.
LAYOUTS = [
    ((2, 3), 1),
    ((5, 1), 1),
    ((7, 13), 1),
    ((256, 1024), 1),
    ((3000, 5), -1),
    ((100_000, 3), 1),
    ((4, 3, 5), 1),
    ((4, 3, 5), -1),
    ((3, 5, 7, 9), 1),
    ((3, 5, 7, 9), -1),
    ((2, 3, 224, 17), 1),
    ((2, 3, 4, 5, 6), 1),
    ((2, 3, 4, 5, 6), 2),
    ((1, 6, 2), 1),
]


def make_case(rng, shape, axis, dtype, offset=0.0, scale=1.0):
    x = (rng.standard_normal(shape) * scale + offset).astype(dtype)
    channels = shape[axis]
    gamma = rng.uniform(0.5, 2.0, channels).astype(dtype)
    beta = rng.standard_normal(channels).astype(dtype)
    return x, gamma, beta


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", LAYOUTS)
def test_training_forward_and_backward_match_reference(shape, axis, dtype, threads, rng):
    x, gamma, beta = make_case(rng, shape, axis, dtype, offset=3.0, scale=2.0)
    channels = shape[axis]
    rm, rv = rng.standard_normal(channels).astype(dtype), np.ones(channels, dtype)
    rm_ref, rv_ref = rm.copy(), rv.copy()

    y, mean, invstd = pybn.batch_norm_forward(x, gamma, beta, running_mean=rm, running_var=rv,
                                              momentum=0.2, axis=axis)
    y_ref, mean_ref, invstd_ref = ref.batch_norm_forward(
        x, gamma, beta, running_mean=rm_ref, running_var=rv_ref, momentum=0.2, axis=axis)
    for got, want in ((y, y_ref), (mean, mean_ref), (invstd, invstd_ref), (rm, rm_ref), (rv, rv_ref)):
        assert got.dtype == dtype
        assert_close(got, want, scale=4.0)
    assert y.flags.c_contiguous

    dy = rng.standard_normal(shape).astype(dtype)
    got = pybn.batch_norm_backward(dy, x, gamma, mean, invstd, axis=axis)
    want = ref.batch_norm_backward(dy, x, gamma, mean, invstd, axis=axis)
    n = x.size // channels
    for g, w, scale in zip(got, want, (1.0, np.sqrt(n), np.sqrt(n))):
        assert g.dtype == dtype
        assert_close(g, w, scale=scale * 4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", [((7, 13), 1), ((3, 5, 7, 9), 1), ((3, 5, 7, 9), -1)])
def test_eval_uses_running_statistics(shape, axis, dtype, threads, rng):
    x, gamma, beta = make_case(rng, shape, axis, dtype)
    channels = shape[axis]
    rm = rng.standard_normal(channels).astype(dtype)
    rv = rng.uniform(0.5, 2, channels).astype(dtype)
    rm0, rv0 = rm.copy(), rv.copy()
    y, mean, invstd = pybn.batch_norm_forward(x, gamma, beta, running_mean=rm, running_var=rv,
                                              training=False, axis=axis)
    y_ref, _, invstd_ref = ref.batch_norm_forward(x, gamma, beta, running_mean=rm, running_var=rv,
                                                  training=False, axis=axis)
    assert_close(y, y_ref, scale=4)
    np.testing.assert_array_equal(mean, rm0)
    assert_close(invstd, invstd_ref)
    np.testing.assert_array_equal(rm, rm0)  # eval never touches them
    np.testing.assert_array_equal(rv, rv0)

    dy = rng.standard_normal(shape).astype(dtype)
    got = pybn.batch_norm_backward(dy, x, gamma, mean, invstd, training=False, axis=axis)
    want = ref.batch_norm_backward(dy, x, gamma, mean, invstd, training=False, axis=axis)
    for g, w in zip(got, want):
        assert_close(g, w, scale=10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_no_affine_means_gamma_one_beta_zero(dtype, rng):
    x, _, _ = make_case(rng, (6, 4, 3), 1, dtype)
    y, mean, invstd = pybn.batch_norm_forward(x)
    y1, _, _ = pybn.batch_norm_forward(x, np.ones(4, dtype), np.zeros(4, dtype))
    np.testing.assert_array_equal(y, y1)
    dy = rng.standard_normal(x.shape).astype(dtype)
    for a, b in zip(pybn.batch_norm_backward(dy, x, None, mean, invstd),
                    pybn.batch_norm_backward(dy, x, np.ones(4, dtype), mean, invstd)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_normalized_output_has_zero_mean_unit_variance(dtype, rng):
    x, _, _ = make_case(rng, (64, 8, 5), 1, dtype, offset=10, scale=3)
    y, _, _ = pybn.batch_norm_forward(x, eps=1e-12)
    assert_close(y.mean(axis=(0, 2)), np.zeros(8), dtype, factor=10)
    assert_close(y.var(axis=(0, 2)), np.ones(8), dtype, factor=10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_mean_statistics_do_not_cancel(dtype, rng):
    # E[x^2] - E[x]^2 would lose every digit of a unit variance at mean 1e4
    # in float32; two passes in double keep them.
    x = (1e4 + rng.standard_normal((4096, 3))).astype(dtype)
    xd = x.astype(np.float64)
    y, mean, invstd = pybn.batch_norm_forward(x, eps=1e-12)
    assert_close(mean, xd.mean(axis=0).astype(dtype))
    assert_close(invstd, (1 / xd.std(axis=0)).astype(dtype), factor=2)
    assert_close(y, ((xd - xd.mean(0)) / xd.std(0)).astype(dtype), scale=4)


@pytest.mark.parametrize("layout", ["rows", "channels-last"])
def test_float32_backward_sums_stay_within_their_float_blocks_bound(layout, threads):
    # float32 backward sums are formed in float inside blocks of 64 rows
    # (rows layout) and added in double: at most 19u of the sum of the
    # terms' magnitudes (docs/design.md). One huge dy followed by thousands
    # of small ones is the case a float sum over the whole column loses:
    # 1e8 + 0.3 rounds to 1e8, about 70u over 8192 rows; blocks lose <= 4u.
    rows, channels, u = 8192, 16, 2.0 ** -24
    x = np.tile(np.linspace(-1, 1, rows, dtype=np.float32)[:, None], (1, channels))
    dy = np.full((rows, channels), 0.3, np.float32)
    dy[0] = 1e8
    if layout == "channels-last":  # (n, h, w, c): the rows layout over n*h*w rows
        x, dy = x.reshape(8, 32, 32, channels), dy.reshape(8, 32, 32, channels)
    axis = 1 if layout == "rows" else -1
    _, mean, invstd = pybn.batch_norm_forward(x, axis=axis)
    _, dgamma, dbeta = pybn.batch_norm_backward(dy, x, np.ones(channels, np.float32), mean, invstd, axis=axis)
    dyd = dy.reshape(-1, channels).astype(np.float64)
    xmu = x.reshape(-1, channels).astype(np.float64) - mean.astype(np.float64)
    want_dbeta, want_dyxmu = dyd.sum(0), (dyd * xmu).sum(0)
    assert np.all(np.abs(dbeta - want_dbeta) <= 19 * u * np.abs(dyd).sum(0) + np.spacing(np.float32(want_dbeta)))
    got_dyxmu = dgamma.astype(np.float64) / invstd.astype(np.float64)
    bound = 19 * u * np.abs(dyd * xmu).sum(0) + 2 * np.abs(np.spacing(np.float32(want_dyxmu)))
    assert np.all(np.abs(got_dyxmu - want_dyxmu) <= bound)


@pytest.mark.parametrize("shape,axis", [((4097, 5), 1), ((33, 5, 129), 1)])
def test_float32_one_pass_statistics_survive_an_outlying_first_value(shape, axis, rng):
    # float32 statistics take one pass of sums shifted by each channel's
    # first value; the worst case for that is a first value far from the
    # rest, which Samuelson's inequality bounds by sqrt(n - 1) deviations.
    x = (1e4 + 1e-2 * rng.standard_normal(shape)).astype(np.float32)
    first = (0,) * axis + (slice(None),) + (0,) * (len(shape) - axis - 1)
    x[first] = np.array([0.0, 1e4, -3e4, 2e4 + 1, 1e18], np.float32)
    xd = x.astype(np.float64)
    reduce = tuple(a for a in range(len(shape)) if a != axis)
    mean_d, var_d = xd.mean(reduce), xd.var(reduce)
    rm, rv = np.zeros(5, np.float32), np.ones(5, np.float32)
    y, mean, invstd = pybn.batch_norm_forward(x, running_mean=rm, running_var=rv, momentum=1.0, axis=axis)
    assert_close(mean, mean_d.astype(np.float32))
    assert_close(invstd, (1 / np.sqrt(var_d + 1e-5)).astype(np.float32))
    n = x.size // 5
    assert_close(rv, (var_d * n / (n - 1)).astype(np.float32))
    shape_c = [1] * len(shape)
    shape_c[axis] = 5
    want = (xd - mean_d.reshape(shape_c)) / np.sqrt(var_d + 1e-5).reshape(shape_c)
    assert_close(y, want.astype(np.float32), scale=np.abs(want).max())


@pytest.mark.parametrize("mean", [0.0, 3.0, -1e4])
@pytest.mark.parametrize("shape,axis", [((4096, 37), 1), ((8, 24, 24, 40), -1), ((1000, 1031), 1)])
def test_float32_rows_statistics_stay_within_their_float_sweeps_bound(mean, shape, axis, rng, threads):
    # The rows layout's float32 statistics sum eight rows at a time in float
    # about each column's first-block mean, then in double: var within 28u
    # and the mean within 5.7u standard deviations (docs/design.md).
    u = 2.0 ** -24
    x = (mean + rng.standard_normal(shape) * rng.uniform(0.1, 10, shape[axis])).astype(np.float32)
    rv = np.ones(shape[axis], np.float32)
    _, got_mean, invstd = pybn.batch_norm_forward(x, running_var=rv, momentum=1.0, eps=1e-30, axis=axis)
    xd = np.moveaxis(x, axis, -1).reshape(-1, shape[axis]).astype(np.float64)
    n, want_mean, want_var = len(xd), xd.mean(0), xd.var(0)
    std = np.sqrt(want_var)
    spacing = np.abs(np.spacing(np.float32(want_mean))).astype(np.float64)
    assert np.all(np.abs(got_mean - want_mean) <= 5.7 * u * std + spacing)
    got_var = 1 / invstd.astype(np.float64) ** 2  # invstd rounded to float: 2u more
    assert np.all(np.abs(got_var - want_var) <= (28 + 2) * u * want_var)
    assert np.all(np.abs(rv * (n - 1) / n - want_var) <= (28 + 2) * u * want_var)


@pytest.mark.parametrize("axis", [1, -1])
def test_float32_rows_statistics_far_from_their_first_block_are_summed_in_double(axis, threads):
    # The float sweeps' shift is a column's mean over its first 64 rows;
    # their error grows with its distance from the column's mean, so beyond
    # a standard deviation the sums are taken again in double. Here the
    # first 64 rows sit ~32 deviations off and the rest repeat one value,
    # so every float rounding errs the same way: float sweeps left invstd
    # 1.9e-5 off (320u), the double sums keep it to its own rounding.
    rows, channels, u = 65536, 4, 2.0 ** -24
    x = np.full((rows, channels), 0.1, np.float32)
    x[:64] = 1e4 + np.arange(64 * channels, dtype=np.float32).reshape(64, channels) / 256
    if axis == -1:
        x = x.reshape(16, 64, 64, channels)
    xd = x.reshape(-1, channels).astype(np.float64)
    y, mean, invstd = pybn.batch_norm_forward(x, eps=1e-30, axis=axis)
    assert np.all(np.abs(mean - xd.mean(0)) <= np.spacing(np.float32(xd.mean(0))))
    assert np.all(np.abs(invstd * xd.std(0) - 1) <= 2 * u)
    want = (xd - xd.mean(0)) / xd.std(0)
    assert_close(y.reshape(-1, channels), want.astype(np.float32), scale=np.abs(want).max())


@pytest.mark.parametrize("dtype", DTYPES)
def test_training_dx_sums_to_zero_per_channel(dtype, rng):
    x, gamma, _ = make_case(rng, (32, 6, 4), 1, dtype)
    _, mean, invstd = pybn.batch_norm_forward(x, gamma)
    dx, _, _ = pybn.batch_norm_backward(rng.standard_normal(x.shape).astype(dtype), x, gamma, mean, invstd)
    assert_close(dx.sum(axis=(0, 2)), np.zeros(6), dtype, factor=100)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape,axis", [((5, 4), 1), ((3, 4, 2, 3), 1), ((3, 2, 2, 4), -1)])
def test_gradients_match_finite_differences(shape, axis, training, rng):
    x = rng.standard_normal(shape) * 2 + 1
    channels = shape[axis]
    gamma = rng.uniform(0.5, 2, channels)
    beta = rng.standard_normal(channels)
    rm, rv = rng.standard_normal(channels), rng.uniform(0.5, 2, channels)
    w = rng.standard_normal(shape)  # L = sum(w * y)
    kw = dict(training=training, axis=axis, running_mean=None if training else rm,
              running_var=None if training else rv)

    def loss(x_, g_=gamma, b_=beta):
        return float(np.sum(w * pybn.batch_norm_forward(x_, g_, b_, **kw).y))

    _, mean, invstd = pybn.batch_norm_forward(x, gamma, beta, **kw)
    dx, dgamma, dbeta = pybn.batch_norm_backward(w, x, gamma, mean, invstd, training=training, axis=axis)
    check_gradient(loss, x, dx, rng)
    check_gradient(lambda g: loss(x, g_=g), gamma, dgamma, rng)
    check_gradient(lambda b: loss(x, b_=b), beta, dbeta, rng)


@pytest.mark.parametrize("dtype", DTYPES)
def test_strided_and_readonly_inputs(dtype, threads, rng):
    base = rng.standard_normal((40, 12, 9)).astype(dtype)
    x = base[::2, ::3, 1::2]  # non-contiguous in every axis
    gamma = rng.standard_normal(8).astype(dtype)[::2]
    x_ro = x.copy()
    x_ro.flags.writeable = False
    rm = np.zeros((4, 2), dtype)[:, 0]  # strided running stats: updated in place all the same
    rv = np.ones((4, 2), dtype)[:, 0]
    y, mean, invstd = pybn.batch_norm_forward(x, gamma, running_mean=rm, running_var=rv)
    y_ro, _, _ = pybn.batch_norm_forward(x_ro, gamma)
    y_ref, mean_ref, _ = ref.batch_norm_forward(np.ascontiguousarray(x), gamma)
    assert_close(y, y_ref, scale=4)
    np.testing.assert_array_equal(y, y_ro)
    assert_close(rm, 0.1 * mean_ref)
    dy = rng.standard_normal((40, 12, 9)).astype(dtype)[::2, ::3, 1::2]
    got = pybn.batch_norm_backward(dy, x_ro, gamma, mean, invstd)
    want = ref.batch_norm_backward(dy, x, gamma, mean, invstd)
    for g, w in zip(got, want):
        assert_close(g, w, scale=10)


def test_integer_input_is_computed_in_float64():
    x = np.arange(12).reshape(4, 3)
    y, mean, _ = pybn.batch_norm_forward(x)
    assert y.dtype == np.float64
    np.testing.assert_allclose(mean, [4.5, 5.5, 6.5])


@pytest.mark.parametrize("dtype", DTYPES)
def test_out_receives_result(dtype, rng):
    x, gamma, beta = make_case(rng, (8, 3, 4), 1, dtype)
    out = np.empty_like(x)
    y, mean, invstd = pybn.batch_norm_forward(x, gamma, beta, out=out)
    assert y is out
    np.testing.assert_array_equal(out, pybn.batch_norm_forward(x, gamma, beta).y)
    # a strided out= and an out= that is x itself (in place) also work
    big = np.empty((8, 3, 8), dtype)
    strided = big[:, :, ::2]
    pybn.batch_norm_forward(x, gamma, beta, out=strided)
    np.testing.assert_array_equal(strided, out)
    x_in_place = x.copy()
    pybn.batch_norm_forward(x_in_place, gamma, beta, out=x_in_place)
    np.testing.assert_array_equal(x_in_place, out)
    dy = rng.standard_normal(x.shape).astype(dtype)
    dx_out = np.empty_like(x)
    dx, _, _ = pybn.batch_norm_backward(dy, x, gamma, mean, invstd, out=dx_out)
    assert dx is dx_out
    assert np.shares_memory(dx, dx_out)


def _same_non_finite_pattern(actual, expected):
    """Equal where finite within tolerance; NaN, +inf and -inf in exactly
    the same places."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    for mask in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(mask(actual), mask(expected), err_msg=mask.__name__)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", [((16, 3), 1), ((6, 3, 4, 5), 1), ((4, 5, 6, 3), -1)])
@pytest.mark.parametrize("bad", [[np.nan], [np.inf], [-np.inf], [np.inf, -np.inf], [np.nan, np.inf]])
def test_non_finite_values_reach_their_channel_as_in_pytorch(dtype, shape, axis, bad, threads, rng):
    # A NaN or inf anywhere in a channel reaches that channel's mean,
    # invstd, y and running averages exactly as the two-pass formulas (and
    # PyTorch) give them; the other channels are untouched. The float32
    # one-pass statistics used to clamp the NaN variance to 0 (invstd 316,
    # running_var 0.9, y = -inf for an inf).
    x = rng.standard_normal(shape).astype(dtype)
    xm = np.moveaxis(x, axis, -1)  # a view: channel last
    for k, value in enumerate(bad):
        xm[np.unravel_index(3 + 2 * k, xm.shape[:-1]) + (1,)] = value
    channels = shape[axis]
    stats = {name: (np.zeros(channels, dtype), np.ones(channels, dtype)) for name in ("pybn", "ref")}
    got = pybn.batch_norm_forward(x, running_mean=stats["pybn"][0], running_var=stats["pybn"][1],
                                  axis=axis)
    with np.errstate(invalid="ignore"):  # inf - inf in the reference's variance
        want = ref.batch_norm_forward(x, running_mean=stats["ref"][0], running_var=stats["ref"][1],
                                      axis=axis)
    for a, b in list(zip(got, want)) + list(zip(stats["pybn"], stats["ref"])):
        _same_non_finite_pattern(a, b)
    assert np.isnan(np.moveaxis(got.y, axis, -1)[..., 1]).all() and np.isnan(got.invstd[1])
    others = np.moveaxis(got.y, axis, -1)[..., [0, 2]]
    assert np.isfinite(others).all() and np.isfinite(stats["pybn"][1][[0, 2]]).all()


def test_issue_example_nan_in_a_float32_batch():
    x = np.array([[1, 2], [np.nan, 4], [3, 5], [2, 7]], np.float32)
    rm, rv = np.zeros(2, np.float32), np.ones(2, np.float32)
    _, mean, invstd = pybn.batch_norm_forward(x, running_mean=rm, running_var=rv)
    assert np.isnan([mean[0], invstd[0], rm[0], rv[0]]).all()
    y = pybn.batch_norm_forward(np.array([[1, 2], [np.inf, 4], [3, 5], [2, 7]], np.float32)).y
    assert np.isnan(y[:, 0]).all()


def test_in_place_running_statistics_must_not_alias_the_inputs():
    # The C layer reads x, gamma and beta through restrict pointers while it
    # writes the running statistics: sharing memory gave wrong y and updates.
    x = np.random.default_rng(0).standard_normal((8, 3))
    gamma, beta = np.ones(3), np.zeros(3)
    buf = np.ones(6)
    cases = [
        (dict(gamma=gamma, running_mean=gamma, running_var=np.ones(3)), "running_mean.*gamma"),
        (dict(beta=beta, running_mean=np.zeros(3), running_var=beta), "running_var.*beta"),
        (dict(running_mean=x[0], running_var=np.ones(3)), "running_mean.*apart from x"),
        (dict(running_mean=x[:, 0][:3], running_var=np.ones(3)), "running_mean.*apart from x"),
        (dict(running_mean=buf[:3], running_var=buf[:3]), "running_mean.*running_var"),
        (dict(running_mean=buf[:3], running_var=buf[2:5]), "running_mean.*running_var"),
    ]
    for kwargs, match in cases:
        before = {k: np.array(v, copy=True) for k, v in kwargs.items()}
        with pytest.raises(ValueError, match=match):
            pybn.batch_norm_forward(x, **kwargs)
        for k, v in kwargs.items():  # nothing was written
            np.testing.assert_array_equal(v, before[k])
    # interleaved views of one buffer share no element: accepted, and right
    rm_rv = np.zeros(6)
    rm_rv[1::2] = 1
    pybn.batch_norm_forward(x, running_mean=rm_rv[0::2], running_var=rm_rv[1::2])
    rm, rv = np.zeros(3), np.ones(3)
    pybn.batch_norm_forward(x, running_mean=rm, running_var=rv)
    np.testing.assert_array_equal(rm_rv[0::2], rm)
    np.testing.assert_array_equal(rm_rv[1::2], rv)
    # eval only reads them: the same array for both is fine
    stats = np.ones(3)
    pybn.batch_norm_forward(x, running_mean=stats, running_var=stats, training=False)


@pytest.mark.parametrize("training", ["False", 0, 1, None, np.float64(1.0)])
def test_training_must_be_a_bool(training):
    x = np.ones((4, 3))
    with pytest.raises(TypeError, match="training: expected a bool"):
        pybn.batch_norm_forward(x, running_mean=np.zeros(3), running_var=np.ones(3), training=training)
    with pytest.raises(TypeError, match="training: expected a bool"):
        pybn.batch_norm_backward(x, x, None, np.zeros(3), np.ones(3), training=training)
    y = pybn.batch_norm_forward(x, running_mean=np.zeros(3), running_var=np.ones(3),
                                training=np.bool_(False)).y
    np.testing.assert_allclose(y, 1 / np.sqrt(1 + 1e-5))


def test_masked_arrays_are_rejected_not_silently_unmasked():
    x = np.ma.masked_array(np.ones((4, 3)), mask=[[0, 0, 1]] * 4)
    with pytest.raises(TypeError, match="x: expected a plain array, got a masked array"):
        pybn.batch_norm_forward(x)
    with pytest.raises(TypeError, match="gamma: expected a plain array, got a masked array"):
        pybn.batch_norm_forward(np.ones((4, 3)), np.ma.masked_array(np.ones(3)))
    with pytest.raises(TypeError, match="running_mean: expected a numpy array"):
        pybn.batch_norm_forward(np.ones((4, 3)), running_mean=np.ma.zeros(3), running_var=np.ones(3))
    # other subclasses are read as the plain arrays they are
    class Tagged(np.ndarray):
        pass
    tagged = np.arange(12.0).reshape(4, 3).view(Tagged)
    np.testing.assert_array_equal(pybn.batch_norm_forward(tagged).y,
                                  pybn.batch_norm_forward(np.asarray(tagged)).y)


_STREAMED_EQUALS_CACHED = """
import sys, numpy as np, pybn
rng = np.random.default_rng(0)
cases = [((64, 32, 56, 56), 1), ((8, 16, 33, 17), 1), ((3, 5, 7, 9), 1), ((1030, 700), 1),
         ((37, 21), 1), ((5, 6, 7, 19), -1), ((4, 8, 9, 10), 1),
         ((300, 2100), 1), ((600, 1500), 1)]  # rows mapped in column tiles / whole rows
out = {}
for k, (shape, axis) in enumerate(cases):
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    g = rng.uniform(0.5, 2, shape[axis]).astype(np.float32)
    b = rng.standard_normal(shape[axis]).astype(np.float32)
    for threads in (1, 2):
        pybn.set_num_threads(threads)
        y, mean, invstd = pybn.batch_norm_forward(x, g, b, axis=axis)
        ye = pybn.batch_norm_forward(x, g, b, running_mean=mean, running_var=1 / invstd**2,
                                     training=False, axis=axis).y
        dx = pybn.batch_norm_backward(dy, x, g, mean, invstd, axis=axis)[0]
        dxe = pybn.batch_norm_backward(dy, x, g, mean, invstd, training=False, axis=axis)[0]
        for name, a in (("y", y), ("eval", ye), ("dx", dx), ("dx_eval", dxe)):
            out[f"{k}_{threads}_{name}"] = a
np.savez(sys.argv[1], **out)
"""


@pytest.mark.parametrize("level", ["native", "avx2"])
def test_streamed_passes_give_the_bits_of_their_cached_twins(level, tmp_path):
    # Beyond the cache, normalize and dx are written with streaming stores
    # (stream.h); below it, by the compiler's clones. Both must compute one
    # formula in one order: results may not depend on the machine's cache
    # size. (Streamed dx differed in 1.6 M of the 6.4 M elements of the
    # 64x32x56x56 case: explicit FMAs there, compiler contraction here.)
    streamed, _ = streamed_and_cached(_STREAMED_EQUALS_CACHED, level, tmp_path)
    for k in streamed.files:  # 1 and 2 threads agree too
        if "_1_" in k:
            np.testing.assert_array_equal(streamed[k], streamed[k.replace("_1_", "_2_")])


# ---- bad input ------------------------------------------------------------------

def _x():
    return np.ones((4, 3), np.float32) + np.arange(12, dtype=np.float32).reshape(4, 3)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(x=np.ones(3)), ValueError, "x: expected an array with at least 2 dimensions"),
    (dict(x=np.ones((0, 3))), ValueError, "x: expected at least one value per channel"),
    (dict(x=np.ones((1, 3))), ValueError, "more than 1 value per channel when training"),
    (dict(x=np.ones((4, 3), bool)), TypeError, "x: expected a float32 or float64"),
    (dict(x=np.ones((4, 3), complex)), TypeError, "x: expected a float32 or float64"),
    (dict(x=np.array([["a", "b"], ["c", "d"]])), TypeError, "x: expected a float32 or float64"),
    (dict(gamma=np.ones(4)), ValueError, r"gamma: expected shape \(3,\)"),
    (dict(beta=np.ones((3, 1))), ValueError, r"beta: expected shape \(3,\)"),
    (dict(axis=2), ValueError, "axis: 2 is out of range"),
    (dict(axis=-3), ValueError, "axis: -3 is out of range"),
    (dict(axis=1.0), TypeError, "axis: expected an int"),
    (dict(eps=0.0), ValueError, "eps: expected a finite number > 0"),
    (dict(eps=-1e-5), ValueError, "eps"),
    (dict(eps=np.nan), ValueError, "eps"),
    (dict(eps=np.inf), ValueError, "eps"),
    (dict(eps="1e-5"), TypeError, "eps: expected a real number"),
    (dict(eps=2**1100), ValueError, "eps: expected a finite number > 0, got a number beyond"),
    (dict(momentum=-(2**1100)), ValueError, "momentum: expected a number in"),
    (dict(training="False"), TypeError, "training: expected a bool, got str"),
    (dict(momentum=1.5), ValueError, r"momentum: expected a number in \[0, 1\]"),
    (dict(momentum=-0.1), ValueError, "momentum"),
    (dict(momentum=np.nan), ValueError, "momentum"),
    (dict(training=False), ValueError, "running_mean, running_var: both are required"),
    (dict(running_mean=np.zeros(3, np.float64), running_var=np.ones(3, np.float32)),
     TypeError, "running_mean: expected dtype float32"),
    (dict(running_mean=np.zeros(4, np.float32)), ValueError, r"running_mean: expected shape \(3,\)"),
    (dict(running_mean=[0.0, 0.0, 0.0]), TypeError, "running_mean: expected a numpy array"),
    (dict(out=np.empty((4, 3), np.float64)), ValueError, "out: expected shape"),
    (dict(out=np.empty((3, 4), np.float32)), ValueError, "out: expected shape"),
    (dict(out=[[0.0] * 3] * 4), TypeError, "out: expected a numpy array"),
])
def test_forward_bad_input(kwargs, exc, match):
    x = kwargs.pop("x", _x())
    with pytest.raises(exc, match=match):
        pybn.batch_norm_forward(x, **kwargs)


def test_forward_read_only_running_stats_and_out_are_rejected():
    ro = np.zeros(3, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="running_var: expected a writeable array"):
        pybn.batch_norm_forward(_x(), running_mean=np.zeros(3, np.float32), running_var=ro)
    out = np.empty((4, 3), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out: expected a writeable array"):
        pybn.batch_norm_forward(_x(), out=out)
    # read-only running stats are fine in eval: they are only read
    pybn.batch_norm_forward(_x(), running_mean=ro, running_var=ro + 1, training=False)


def test_backward_bad_input():
    x = _x()
    _, mean, invstd = pybn.batch_norm_forward(x)
    with pytest.raises(ValueError, match=r"dy: expected shape \(4, 3\) like x"):
        pybn.batch_norm_backward(np.ones((3, 4), np.float32), x, None, mean, invstd)
    with pytest.raises(TypeError, match="dy: expected dtype float32"):
        pybn.batch_norm_backward(np.ones((4, 3)), x, None, mean, invstd)
    with pytest.raises(ValueError, match=r"invstd: expected shape \(3,\)"):
        pybn.batch_norm_backward(np.ones_like(x), x, None, mean, invstd[:2])
    with pytest.raises(ValueError, match="mean, invstd: both are required"):
        pybn.batch_norm_backward(np.ones_like(x), x, None, None, invstd)
    with pytest.raises(ValueError, match="out: expected shape"):
        pybn.batch_norm_backward(np.ones_like(x), x, None, mean, invstd, out=np.empty(3, np.float32))


def test_kernel_statuses_name_the_argument():
    # The domain of each scalar is checked once, in C; its status becomes a
    # message naming the argument (it used to be "status 1"), whether the
    # call came in plain or was converted first.
    from pybn import _kernels
    x = np.ones((4, 3), np.float32)
    v = np.ones(3, np.float32)
    with pytest.raises(ValueError, match=r"eps: expected a finite number > 0, got -1.0"):
        _kernels.batch_norm_forward(x, None, None, None, None, True, 0.1, -1.0, 1, None)
    with pytest.raises(ValueError, match=r"eps: expected a finite number > 0, got nan"):
        _kernels.batch_norm_forward(x, None, None, v, v.copy(), False, 0.1, float("nan"), 1, None)
    with pytest.raises(ValueError, match=r"momentum: expected a number in \[0, 1\], got 1.5"):
        _kernels.batch_norm_forward(x, None, None, None, None, True, 1.5, 1e-5, 1, None)
    with pytest.raises(ValueError, match=r"x: expected more than 1 value per channel when training"):
        _kernels.batch_norm_forward(x[:1], None, None, None, None, True, 0.1, 1e-5, 1, None)
    for eps in (-1, 0, np.float32(-2.0), float("inf")):
        with pytest.raises(ValueError, match="eps: expected a finite number > 0"):
            pybn.batch_norm_forward(x.astype(np.float64)[:, ::-1], eps=eps)
    with pytest.raises(ValueError, match=r"momentum: expected a number in \[0, 1\]"):
        pybn.batch_norm_forward(x.tolist(), momentum=-0.5)
    with pytest.raises(ValueError, match="eps: expected a finite number > 0, got a number beyond float"):
        pybn.batch_norm_forward(x, eps=2**1100)


@pytest.mark.parametrize("offset", [0.0, 10.0, 15.0, 17.0, 100.0, 1e4])
@pytest.mark.parametrize("shape,axis", [((512, 6), 1), ((8, 6, 40), 1)])
def test_both_precision_paths_match_the_reference(offset, shape, axis, rng):
    # Normalization and dx run in float32 arithmetic while |mean| <= 16 std
    # and in double beyond: both sides of that switch are as accurate.
    x = (offset + rng.standard_normal(shape)).astype(np.float32)
    gamma = rng.uniform(0.5, 2.0, 6).astype(np.float32)
    beta = rng.standard_normal(6).astype(np.float32)
    y, mean, invstd = pybn.batch_norm_forward(x, gamma, beta, axis=axis)
    y_ref, _, _ = ref.batch_norm_forward(x, gamma, beta, axis=axis)
    assert_close(y, y_ref, scale=4)
    dy = rng.standard_normal(shape).astype(np.float32)
    dx, _, _ = pybn.batch_norm_backward(dy, x, gamma, mean, invstd, axis=axis)
    dx_ref, _, _ = ref.batch_norm_backward(dy, x, gamma, mean, invstd, axis=axis)
    assert_close(dx, dx_ref, scale=8)


@pytest.mark.parametrize("level", ["native", "avx2"])
def test_streaming_stores_beyond_the_cache_match_the_reference(level, tmp_path):
    # Beyond the last-level cache, float32 outputs (normalize and dx, planes
    # and rows layouts) are written with streaming stores. PYBN_CACHE_BYTES makes the cache
    # tiny so that small, oddly aligned arrays take that path, on every
    # SIMD level, and must match the reference and give the same bits on
    # 1 and 2 threads.
    import os
    import subprocess
    import sys
    skip_unless_cpu_runs(level)
    code = (
        "import numpy as np, pybn\n"
        "from pybn import reference as ref\n"
        "rng = np.random.default_rng(0)\n"
        "for shape, axis in [((3, 5, 7, 9), 1), ((4, 8, 33, 17), 1), ((2, 3, 1, 5), 1), ((37, 21), 1),\n"
        "                    ((130, 1100), 1), ((5, 6, 7, 19), -1)]:\n"
        "    buf = rng.standard_normal(int(np.prod(shape)) + 1).astype(np.float32)\n"
        "    x = buf[1:].reshape(shape)  # not 64-byte aligned\n"
        "    dy = rng.standard_normal(shape).astype(np.float32)\n"
        "    g = rng.uniform(0.5, 2, shape[axis]).astype(np.float32)\n"
        "    b = rng.standard_normal(shape[axis]).astype(np.float32)\n"
        "    runs = []\n"
        "    for threads in (1, 2):\n"
        "        pybn.set_num_threads(threads)\n"
        "        y, mean, invstd = pybn.batch_norm_forward(x, g, b, axis=axis)\n"
        "        dx, dg, db = pybn.batch_norm_backward(dy, x, g, mean, invstd, axis=axis)\n"
        "        runs.append((y, dx))\n"
        "    for a, c in zip(*runs):\n"
        "        assert np.array_equal(a, c)\n"
        "    xd = x.astype(np.float64)\n"
        "    y_ref, m_ref, s_ref = ref.batch_norm_forward(xd, g, b, axis=axis)\n"
        "    dx_ref = ref.batch_norm_backward(dy.astype(np.float64), xd, g, m_ref, s_ref, axis=axis)[0]\n"
        "    np.testing.assert_allclose(y, y_ref, rtol=2e-5, atol=2e-5 * 4)\n"
        "    np.testing.assert_allclose(dx, dx_ref, rtol=2e-5, atol=2e-5 * 4 * np.abs(dx_ref).max())\n"
        "print('ok')\n")
    env = dict(os.environ, PYBN_CACHE_BYTES="64")
    if level == "avx2":
        env["PYBN_SIMD"] = "avx2"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")


@pytest.mark.parametrize("shape", [(64, 3), (2, 3, 4, 4), (1, 3, 40, 40), (8, 3, 1, 1)])
@pytest.mark.parametrize("training", [True, False])
def test_a_constant_channel_with_a_tiny_eps_keeps_beta_exactly(shape, training, threads):
    # x*alpha + shift cancels when |mean*alpha| dwarfs y: a constant channel
    # with eps=1e-8 has alpha = gamma*1e4, and y came out 1.3e-8 off beta in
    # float64 (found by the property tests). Centered, x - mean is exact
    # whenever the mean is (an integer value sums exactly; the running mean
    # is given). `threads`: the conftest fixture, 1 and 2 threads.
    value = -5596.0 if training else -5595.9726688
    x = np.full(shape, value)
    x[:, 1] = np.random.default_rng(0).standard_normal(x[:, 1].shape)
    gamma, beta = np.array([7.0, 1.0, 3.0]), np.array([1 / 3, 0.5, -2.0])
    kwargs = dict(training=True) if training else dict(
        training=False, running_mean=np.array([value, 0.0, value]), running_var=np.array([0.0, 1.0, 0.0]))
    y = pybn.batch_norm_forward(x, gamma, beta, eps=1e-8, **kwargs).y
    for c in (0, 2):
        np.testing.assert_allclose(y[:, c], beta[c], rtol=1e-12, atol=1e-12)


_BACKWARD_SCHEDULE_SCRIPT = """
import sys
import numpy as np, pybn
from pybn import _kernels, reference as ref
assert _kernels.build_info()["short_planes_by_channel"] == (sys.argv[2] == "channel")
rng = np.random.default_rng(3)
out = {}
# small planes (7x7, 196, 255), short planes (30x30, 1000 float64), and planes of 16 KB and up
for i, (shape, dtype) in enumerate([((9, 5, 7, 7), np.float32), ((3, 16, 14, 14), np.float32),
                                    ((4, 3, 1, 255), np.float64), ((6, 5, 30, 30), np.float32),
                                    ((3, 4, 10, 100), np.float64), ((2, 3, 70, 70), np.float32),
                                    ((2, 3, 50, 50), np.float64)]):
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    g = rng.uniform(0.5, 2, shape[1]).astype(dtype)
    runs = []
    for threads in (1, 2, 3):
        pybn.set_num_threads(threads)
        _, mean, invstd = pybn.batch_norm_forward(x, g, None)
        runs.append(pybn.batch_norm_backward(dy, x, g, mean, invstd))
    for a, b, c in zip(*runs):
        assert np.array_equal(a, b) and np.array_equal(a, c), (shape, "differs between thread counts")
    xd = x.astype(np.float64)
    _, m_ref, s_ref = ref.batch_norm_forward(xd, g.astype(np.float64), None)
    want = ref.batch_norm_backward(dy.astype(np.float64), xd, g.astype(np.float64), m_ref, s_ref)
    tol = 2e-5 if dtype == np.float32 else 1e-10
    for got, expected in zip(runs[0], want):
        np.testing.assert_allclose(got, expected, rtol=tol, atol=tol * 8 * np.abs(expected).max())
    for name, a in zip(("dx", "dgamma", "dbeta"), runs[0]):
        out[f"{i}_{name}"] = a
np.savez(sys.argv[1], **out)
"""


def test_both_backward_schedules_of_short_planes_match_the_reference(tmp_path):
    # float32 planes under 16 KB run one channel at a time on most CPUs and
    # in memory order on AMD ones (runtime.c); PYBN_BN_SHORT_PLANES forces
    # either, so both run here whatever the CPU. Each gives the same bits for
    # 1, 2 and 3 threads and the reference's values; both sum a plane in the
    # same order (float lanes under 256 elements, float blocks from there),
    # and float64 and long planes always run by channel, so their bits agree.
    import os
    import subprocess
    import sys
    script = tmp_path / "schedule.py"
    script.write_text(_BACKWARD_SCHEDULE_SCRIPT)
    results = {}
    for schedule in ("channel", "planes"):
        path = tmp_path / f"{schedule}.npz"
        run = subprocess.run([sys.executable, str(script), str(path), schedule], capture_output=True,
                             text=True, env=dict(os.environ, PYBN_BN_SHORT_PLANES=schedule), timeout=300)
        assert run.returncode == 0, run.stderr
        results[schedule] = np.load(path, allow_pickle=False)
    channel, planes = results["channel"], results["planes"]
    for key in channel.files:
        np.testing.assert_array_equal(channel[key], planes[key], err_msg=key)
