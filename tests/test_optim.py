"""Optimizer updates against hand-computed steps; schedules; bad arguments."""
import numpy as np
import pytest

from pybn import optim
from pybn.nn import Parameter


def _param(values, grad):
    p = Parameter(np.array(values, float))
    p.grad[...] = grad
    return p


def test_sgd_plain_and_momentum_steps():
    p = _param([1.0, 2.0], [0.5, -1.0])
    optim.SGD([p], lr=0.1).step()
    np.testing.assert_allclose(p.data, [0.95, 2.1])
    p = _param([1.0], [1.0])
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    opt.step()  # v = 1
    opt.step()  # v = 0.9 + 1 = 1.9
    np.testing.assert_allclose(p.data, [1.0 - 0.1 - 0.19])


def test_rmsprop_step():
    p = _param([1.0], [2.0])
    optim.RMSprop([p], lr=0.01, beta=0.9, eps=1e-8).step()
    s = 0.1 * 4.0
    np.testing.assert_allclose(p.data, [1.0 - 0.01 * 2.0 / (np.sqrt(s) + 1e-8)])


def test_adam_bias_corrected_steps():
    p = _param([1.0], [2.0])
    opt = optim.Adam([p], lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8)
    opt.step()
    # first step: m_hat = g, v_hat = g^2, so the step is lr * sign(g)
    np.testing.assert_allclose(p.data, [0.9], rtol=1e-7)
    p.grad[...] = -1.0
    opt.step()
    m = 0.9 * 0.2 + 0.1 * -1.0
    v = 0.999 * 0.004 + 0.001 * 1.0
    expected = 0.9 - 0.1 * (m / (1 - 0.81)) / (np.sqrt(v / (1 - 0.999**2)) + 1e-8)
    np.testing.assert_allclose(p.data, [expected])


def test_weight_decay_adds_l2_gradient():
    p = _param([2.0], [0.0])
    optim.SGD([p], lr=0.1, weight_decay=0.5).step()
    np.testing.assert_allclose(p.data, [2.0 - 0.1 * 0.5 * 2.0])


def test_optimizer_state_round_trip():
    p = _param([1.0, 2.0], [0.3, -0.2])
    opt = optim.Adam([p], lr=0.01)
    opt.step()
    state = opt.state_dict()
    q = _param([1.0, 2.0], [0.3, -0.2])
    other = optim.Adam([q], lr=0.5)
    other.load_state_dict(state)
    assert other.lr == 0.01 and other.t == 1
    np.testing.assert_array_equal(other.state["m"][0], opt.state["m"][0])


@pytest.mark.parametrize("schedule,expected", [
    (lambda o: optim.InverseTimeDecay(o, decay_rate=1.0), [1.0, 0.5, 1 / 3, 0.25]),
    (lambda o: optim.ExponentialDecay(o, gamma=0.95), [1.0, 0.95, 0.95**2, 0.95**3]),
    (lambda o: optim.StepDecay(o, step_size=2, gamma=0.1), [1.0, 1.0, 0.1, 0.1]),
])
def test_schedules(schedule, expected):
    opt = optim.SGD([_param([0.0], [0.0])], lr=1.0)
    sched = schedule(opt)
    seen = [opt.lr]
    for _ in range(3):
        sched.step()
        seen.append(opt.lr)
    np.testing.assert_allclose(seen, expected)


@pytest.mark.parametrize("make,match", [
    (lambda p: optim.SGD(p, lr=0.0), r"lr: expected a number in \(0"),
    (lambda p: optim.SGD(p, lr=-1), "lr"),
    (lambda p: optim.SGD(p, lr=float("nan")), "lr"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=1.0), r"momentum: expected a number in \[0.0, 1.0\)"),
    (lambda p: optim.Adam(p, lr=0.1, beta1=1.0), "beta1"),
    (lambda p: optim.Adam(p, lr=0.1, beta2=-0.1), "beta2"),
    (lambda p: optim.Adam(p, lr=0.1, eps=0), "eps"),
    (lambda p: optim.RMSprop(p, lr=0.1, beta=1.5), "beta"),
    (lambda p: optim.SGD(p, lr=0.1, weight_decay=-1), "weight_decay"),
    (lambda p: optim.SGD([], lr=0.1), "params: expected at least one parameter"),
])
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make([_param([0.0], [0.0])])
    with pytest.raises(TypeError, match="lr: expected a number"):
        optim.SGD([_param([0.0], [0.0])], lr="0.1")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make", [
    lambda ps: optim.SGD(ps, lr=0.1),
    lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-3),
    lambda ps: optim.RMSprop(ps, lr=0.01, beta=0.9, weight_decay=1e-2),
    lambda ps: optim.Adam(ps, lr=0.01, beta1=0.8, beta2=0.99, weight_decay=1e-3),
])
def test_fused_steps_follow_the_numpy_formulas(make, dtype):
    # The C kernel's step (one pass) against the NumPy formulas (_update),
    # which still serve arrays the kernel does not take.
    from pybn import _kernels
    from pybn.nn import Parameter
    rng = np.random.default_rng(0)
    shapes = [(7, 5), (5,), (40000,)]  # the last one is split into tasks
    fused = [Parameter(rng.standard_normal(s).astype(dtype)) for s in shapes]
    plain = [Parameter(p.data.copy()) for p in fused]
    opt_fused, opt_plain = make(fused), make(plain)
    opt_plain._fused = lambda i, p: None  # the NumPy path
    for step in range(5):
        for a, b in zip(fused, plain):
            a.grad[...] = b.grad[...] = rng.standard_normal(a.data.shape).astype(dtype)
        opt_fused.step()
        opt_plain.step()
    tol = dict(rtol=2e-6, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-13)
    for a, b in zip(fused, plain):
        np.testing.assert_allclose(a.data, b.data, **tol)
    for name in opt_fused.state:
        for a, b in zip(opt_fused.state[name], opt_plain.state[name]):
            np.testing.assert_allclose(a, b, **tol)
    # arrays the kernel does not take (here: a strided view) still step, by NumPy
    view = Parameter(np.zeros((4, 6), dtype)[:, ::2])
    view.grad = np.ones((4, 3), dtype)
    assert _kernels.optimizer_step(0, view.data, view.grad, None, None, 0.1, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0) is None
    make([view]).step()
    assert np.all(view.data < 0)
