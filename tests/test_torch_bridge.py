"""pybn.torch: parity with torch.nn on forward, backward and running
statistics; gradcheck in float64; torch.library.opcheck; fallbacks;
state_dict round trips; patch/unpatch; a small CNN trained on digits.
Needs PyTorch (CI installs torch==2.13.0 for these); skipped without it."""
import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pt = pytest.importorskip("pybn.torch")

from torch.library import opcheck  # noqa: E402

DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-10)}


def _pair(cls_torch, cls_pybn, *args, dtype=torch.float32, **kwargs):
    ref = cls_torch(*args, **kwargs).to(dtype)
    mine = cls_pybn(*args, **kwargs).to(dtype)
    with torch.no_grad():
        if ref.weight is not None:
            ref.weight.uniform_(0.5, 2.0)
            ref.bias.uniform_(-1, 1)
    mine.load_state_dict(ref.state_dict())
    return ref, mine


CASES = [
    (torch.nn.BatchNorm1d, pt.BatchNorm1d, (7, 5), torch.contiguous_format),
    (torch.nn.BatchNorm1d, pt.BatchNorm1d, (6, 5, 9), torch.contiguous_format),
    (torch.nn.BatchNorm2d, pt.BatchNorm2d, (4, 5, 6, 7), torch.contiguous_format),
    (torch.nn.BatchNorm2d, pt.BatchNorm2d, (4, 5, 6, 7), torch.channels_last),
    (torch.nn.BatchNorm3d, pt.BatchNorm3d, (2, 5, 3, 4, 5), torch.contiguous_format),
    (torch.nn.BatchNorm3d, pt.BatchNorm3d, (2, 5, 3, 4, 5), torch.channels_last_3d),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls_torch,cls_pybn,shape,fmt", CASES)
@pytest.mark.parametrize("options", [dict(), dict(momentum=None), dict(affine=False),
                                     dict(track_running_stats=False), dict(momentum=0.3, eps=1e-3)])
def test_batch_norm_modules_match_torch_nn(cls_torch, cls_pybn, shape, fmt, dtype, options):
    torch.manual_seed(0)
    ref, mine = _pair(cls_torch, cls_pybn, shape[1], dtype=dtype, **options)
    for step in range(3):  # training steps update the running statistics identically
        x = (torch.randn(shape, dtype=dtype) * 3 + 1).to(memory_format=fmt)
        xr, xm = x.clone().requires_grad_(), x.clone().requires_grad_()
        yr, ym = ref(xr), mine(xm)
        torch.testing.assert_close(ym, yr, **TOL[dtype])
        if fmt != torch.contiguous_format:
            assert ym.is_contiguous(memory_format=fmt)  # channels-last in, channels-last out
        g = torch.randn_like(yr)
        yr.backward(g)
        ym.backward(g)
        torch.testing.assert_close(xm.grad, xr.grad, **TOL[dtype])
        if ref.weight is not None:
            torch.testing.assert_close(mine.weight.grad, ref.weight.grad, **TOL[dtype])
            torch.testing.assert_close(mine.bias.grad, ref.bias.grad, **TOL[dtype])
    for name, value in ref.state_dict().items():
        torch.testing.assert_close(mine.state_dict()[name], value, **TOL[dtype])
    ref.eval()
    mine.eval()
    x = torch.randn(shape, dtype=dtype).to(memory_format=fmt).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    yr, ym = ref(x), mine(x2)
    torch.testing.assert_close(ym, yr, **TOL[dtype])
    yr.sum().backward()
    ym.sum().backward()
    torch.testing.assert_close(x2.grad, x.grad, **TOL[dtype])


def test_state_dict_loads_both_ways_with_num_batches_tracked():
    ref = torch.nn.BatchNorm2d(4)
    ref(torch.randn(3, 4, 5, 5))
    mine = pt.BatchNorm2d(4)
    assert list(mine.state_dict()) == list(ref.state_dict())
    mine.load_state_dict(ref.state_dict())
    assert int(mine.num_batches_tracked) == 1
    mine(torch.randn(3, 4, 5, 5))
    back = torch.nn.BatchNorm2d(4)
    back.load_state_dict(mine.state_dict())
    assert int(back.num_batches_tracked) == 2
    assert isinstance(mine, torch.nn.BatchNorm2d)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_gradcheck_batch_norm_float64(fmt):
    torch.manual_seed(1)
    x = torch.randn(4, 3, 3, 3, dtype=torch.float64).to(memory_format=fmt).requires_grad_()
    w = torch.rand(3, dtype=torch.float64, requires_grad=True)
    b = torch.rand(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: pt.batch_norm(x, None, None, w, b, True), (x, w, b))
    rm, rv = torch.randn(3, dtype=torch.float64), torch.rand(3, dtype=torch.float64) + 0.5
    assert torch.autograd.gradcheck(lambda x, w, b: pt.batch_norm(x, rm, rv, w, b, False), (x, w, b))


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "traced"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", ["weight", "bias", "both", "neither"])
def test_batch_norm_with_weight_or_bias_alone_as_torch(affine, training, compiled, monkeypatch):
    # a bias without a weight got no gradient (None, silently), a weight
    # without a bias failed its backward
    monkeypatch.setattr(pt, "_eager", lambda: not compiled)
    results = []
    for fn in (torch.nn.functional.batch_norm, pt.batch_norm):
        torch.manual_seed(9)
        x = torch.randn(4, 3, 2, 2, dtype=torch.float64, requires_grad=True)
        w, b = (torch.rand(3, dtype=torch.float64, requires_grad=True) for _ in range(2))
        w, b = (w if affine in ("weight", "both") else None), (b if affine in ("bias", "both") else None)
        rm, rv = torch.randn(3, dtype=torch.float64), torch.rand(3, dtype=torch.float64) + 0.5
        y = fn(x, rm, rv, w, b, training)
        y.backward(torch.randn_like(y))
        results.append([y, x.grad, rm, rv] + [t.grad for t in (w, b) if t is not None])
    for mine, ref in zip(*reversed(results)):
        assert mine is not None
        torch.testing.assert_close(mine, ref, **TOL[torch.float64])


def test_batch_norm_refuses_one_running_statistic_without_the_other():
    x = torch.randn(4, 3)
    for rm, rv in ((torch.zeros(3), None), (None, torch.ones(3))):
        with pytest.raises(ValueError, match="running_mean and running_var must either both be None"):
            torch.nn.functional.batch_norm(x, rm, rv, training=True)
        with pytest.raises(ValueError, match="running_mean and running_var must either both be None"):
            pt.batch_norm(x, rm, rv, training=True)


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_gradcheck_softmax_family_float64(dim):
    z = torch.randn(4, 5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: pt.softmax(z, dim), (z,))
    assert torch.autograd.gradcheck(lambda z: pt.log_softmax(z, dim), (z,))
    torch.testing.assert_close(pt.softmax(z, dim), torch.softmax(z, dim))
    torch.testing.assert_close(pt.log_softmax(z, dim), torch.log_softmax(z, dim))


CE_CASES = [
    dict(), dict(reduction="sum"), dict(reduction="none"), dict(label_smoothing=0.1),
    dict(ignore_index=2), dict(weight="w"), dict(weight="w", reduction="none"), dict(weight="w", ignore_index=1),
    dict(weight="w", label_smoothing=0.2),  # not covered by pybn: PyTorch's op
    dict(label_smoothing=0.3, ignore_index=0, reduction="sum"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("options", CE_CASES)
def test_cross_entropy_matches_torch_with_labels(dtype, options):
    torch.manual_seed(2)
    z = torch.randn(9, 5, dtype=dtype) * 3
    t = torch.tensor([0, 1, 2, 3, 4, 2, 1, 0, 2])
    options = {k: (torch.rand(5, dtype=dtype) + 0.1 if v == "w" else v) for k, v in options.items()}
    za, zb = z.clone().requires_grad_(), z.clone().requires_grad_()
    a = torch.nn.functional.cross_entropy(za, t, **options)
    b = pt.cross_entropy(zb, t, **options)
    torch.testing.assert_close(b, a, **TOL[dtype])
    g = torch.rand_like(a)
    a.backward(g)
    b.backward(g)
    torch.testing.assert_close(zb.grad, za.grad, **TOL[dtype])
    loss = pt.CrossEntropyLoss(**options)
    torch.testing.assert_close(loss(z, t), a.detach(), **TOL[dtype])


@pytest.mark.parametrize("smoothing", [0.0, 0.25])
def test_cross_entropy_with_probabilities_and_gradcheck(smoothing):
    torch.manual_seed(3)
    z = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    q = torch.softmax(torch.randn(6, 4, dtype=torch.float64), 1)
    torch.testing.assert_close(pt.cross_entropy(z, q, label_smoothing=smoothing),
                               torch.nn.functional.cross_entropy(z, q, label_smoothing=smoothing))
    assert torch.autograd.gradcheck(lambda z: pt.cross_entropy(z, q, label_smoothing=smoothing), (z,))
    t = torch.tensor([0, 3, 1, 2, 2, 0])
    assert torch.autograd.gradcheck(lambda z: pt.cross_entropy(z, t, reduction="none"), (z,))


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "traced"])
def test_second_derivatives_as_torch_gives_them(compiled, monkeypatch):
    # A backward with create_graph=True (a gradient penalty, a Hessian-vector
    # product) used the kernels' gradients as constants: the penalty's
    # gradients through batch norm were missing or wrong, silently.
    monkeypatch.setattr(pt, "_eager", lambda: not compiled)
    torch.manual_seed(5)
    f64 = dict(dtype=torch.float64)
    x = torch.randn(5, 3, 2, 2, **f64, requires_grad=True)
    w, b = torch.rand(3, **f64, requires_grad=True), torch.rand(3, **f64, requires_grad=True)
    rm, rv = torch.randn(3, **f64), torch.rand(3, **f64) + 0.5
    for training in (True, False):
        assert torch.autograd.gradgradcheck(lambda x, w, b: pt.batch_norm(x, rm, rv, w, b, training), (x, w, b))
    assert torch.autograd.gradgradcheck(lambda x: pt.batch_norm(x, None, None, None, None, True), (x,))
    z = torch.randn(6, 4, **f64, requires_grad=True)
    for fn in (pt.softmax, pt.log_softmax):
        assert torch.autograd.gradgradcheck(lambda z: fn(z, 1), (z,))
        assert torch.autograd.gradgradcheck(lambda z: fn(z, 0), (z,))
    t, q = torch.tensor([0, 3, 1, 2, 2, 0]), torch.softmax(torch.randn(6, 4, **f64), 1)
    for options in (dict(), dict(reduction="none"), dict(label_smoothing=0.2, reduction="sum"), dict(ignore_index=2),
                    dict(weight=torch.rand(4, **f64) + 0.1)):
        assert torch.autograd.gradgradcheck(lambda z: pt.cross_entropy(z, t, **options), (z,))
    assert torch.autograd.gradgradcheck(lambda z: pt.cross_entropy(z, q, label_smoothing=0.1), (z,))


def test_a_gradient_penalty_through_a_patched_model_matches_torch_nn():
    torch.manual_seed(6)
    net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(),
                              torch.nn.Linear(8, 3)).double()
    patched = pt.patch(copy.deepcopy(net))
    x, t = torch.randn(16, 5, dtype=torch.float64), torch.randint(0, 3, (16,))
    grads = []
    for model, loss_fn in ((net, torch.nn.functional.cross_entropy), (patched, pt.cross_entropy)):
        xx = x.clone().requires_grad_()
        (g,) = torch.autograd.grad(loss_fn(model(xx), t), xx, create_graph=True)
        g.pow(2).sum().backward()
        grads.append([p.grad for p in model.parameters()])
    for mine, ref in zip(*reversed(grads)):
        assert mine is not None
        torch.testing.assert_close(mine, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")  # torch.func's import
def test_torch_func_transforms_and_forward_mode_work_as_with_torch_nn():
    # pybn's autograd.Functions have no vmap or jvp rules: under a transform
    # they raised where torch.nn works; such calls now take PyTorch's ops
    from torch.func import functional_call, grad, jvp, vmap
    torch.manual_seed(7)
    net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.BatchNorm1d(8, track_running_stats=False),
                              torch.nn.ReLU(), torch.nn.Linear(8, 3))
    x, t = torch.randn(16, 5), torch.randint(0, 3, (16,))
    results = []
    for model, ce, softmax in ((net, torch.nn.functional.cross_entropy, torch.softmax),
                               (pt.patch(copy.deepcopy(net)), pt.cross_entropy, pt.softmax)):
        params = {k: v.detach() for k, v in model.named_parameters()}
        grads = grad(lambda p: ce(functional_call(model, p, (x,)), t))(params)
        per_row = vmap(lambda row: softmax(model(row.unsqueeze(0).expand(2, -1)), 1))(x)
        tangent = jvp(lambda z: softmax(z, 1), (x,), (torch.ones_like(x),))[1]
        with torch.autograd.forward_ad.dual_level():
            dual = torch.autograd.forward_ad.make_dual(x, torch.randn_like(x, generator=torch.Generator().manual_seed(1)))
            forward = torch.autograd.forward_ad.unpack_dual(model(dual)).tangent
        results.append([*grads.values(), per_row, tangent, forward])
    for mine, ref in zip(*reversed(results)):
        torch.testing.assert_close(mine, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # deprecated, still used
def test_torch_jit_trace_of_a_patched_model_saves_and_loads():
    # a trace recorded the Python autograd.Function: torch.jit.save refused
    # it, and tracing pybn.torch.softmax failed its sanity check
    import io
    torch.manual_seed(10)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 3)).eval()
    patched = pt.patch(copy.deepcopy(net))
    x, x2 = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.trace(patched, x), buffer)
    buffer.seek(0)
    torch.testing.assert_close(torch.jit.load(buffer)(x2), net(x2))
    z = torch.randn(4, 5)
    traced = torch.jit.trace(lambda z: pt.log_softmax(z, 1), z)
    torch.testing.assert_close(traced(z * 2), torch.log_softmax(z * 2, 1))


def test_an_empty_batch_gives_an_empty_output_as_torch_nn():
    for training in (True, False):
        ref, mine = torch.nn.BatchNorm2d(3).train(training), pt.BatchNorm2d(3).train(training)
        x = torch.randn(0, 3, 2, 2)
        assert mine(x).shape == ref(x).shape == (0, 3, 2, 2)


def test_opcheck_passes_for_every_operator():
    x = torch.randn(8, 3, 4, 4)
    stats = (torch.zeros(3), torch.ones(3))
    opcheck(pt._batch_norm_op, (x, torch.ones(3), torch.zeros(3), *stats, True, 0.1, 1e-5))
    opcheck(pt._batch_norm_op, (x, None, None, *stats, False, 0.1, 1e-5))
    opcheck(pt._batch_norm_op, (x.to(memory_format=torch.channels_last), None, None, None, None, True, 0.1, 1e-5))
    opcheck(pt._batch_norm_backward_op, (torch.randn(8, 3, 4, 4), x, torch.ones(3), torch.zeros(3),
                                         torch.ones(3), True))
    for op in (pt._softmax_op, pt._log_softmax_op):
        opcheck(op, (torch.randn(5, 7), 1))
        opcheck(op, (torch.randn(5, 7, 2), 0))
    opcheck(pt._cross_entropy_op, (torch.randn(5, 7), torch.tensor([0, 1, 2, 3, 6]), 0.1, 1))
    opcheck(pt._cross_entropy_op, (torch.randn(5, 7), torch.softmax(torch.randn(5, 7), 1), 0.0, 0))


def test_what_pybn_does_not_cover_falls_back_to_torch():
    torch.manual_seed(4)
    cases = [
        torch.randn(4, 3, 5, 5, dtype=torch.float16),          # another dtype
        torch.randn(4, 3, 5, 5)[:, :, ::2],                     # another layout (strided)
        torch.randn(4, 3, 5, 5).to(torch.bfloat16),
    ]
    for x in cases:
        ref = torch.nn.BatchNorm2d(3).to(x.dtype)
        mine = pt.BatchNorm2d(3).to(x.dtype)
        torch.testing.assert_close(mine(x), ref(x))
    # softmax with a dtype= argument, cross-entropy over (N, C, d) targets
    z = torch.randn(3, 4)
    torch.testing.assert_close(pt.softmax(z, 1, dtype=torch.float64), torch.softmax(z, 1, dtype=torch.float64))
    z3, t3 = torch.randn(2, 4, 5), torch.randint(0, 4, (2, 5))
    torch.testing.assert_close(pt.cross_entropy(z3, t3), torch.nn.functional.cross_entropy(z3, t3))
    # and PyTorch's own errors where PyTorch raises them
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        pt.BatchNorm1d(3)(torch.randn(1, 3))


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "traced"])
def test_bad_arguments_raise_what_torch_raises(compiled, monkeypatch):
    # softmax(z, 2) of a 2-D z ran over dim 0 (2 % 2), silently
    monkeypatch.setattr(pt, "_eager", lambda: not compiled)  # the custom-op path, as traced code takes
    z, target = torch.randn(4, 5), torch.tensor([0, 1, 2, 9])
    for fn, torch_fn in ((pt.softmax, torch.softmax), (pt.log_softmax, torch.log_softmax)):
        for dim in (2, -3):
            with pytest.raises(IndexError, match="Dimension out of range"):
                torch_fn(z, dim)
            with pytest.raises(IndexError, match="Dimension out of range"):
                fn(z, dim)
    with pytest.raises(IndexError):
        torch.nn.functional.cross_entropy(z, target)
    for bad in (target, -target):  # an IndexError as torch's, a ValueError as pybn's
        with pytest.raises(IndexError, match="target: label"):
            pt.cross_entropy(z, bad)
        with pytest.raises(ValueError, match="target: label"):
            pt.cross_entropy(z, bad)
    with pytest.raises(RuntimeError, match="label_smoothing must be between 0.0 and 1.0"):
        pt.cross_entropy(z, target.clamp(max=4), label_smoothing=2.0)


def test_cross_entropy_targets_as_torch_takes_them():
    # pybn took int32 labels and an ignore_index with probabilities, which
    # PyTorch refuses, and gave probability targets no gradient, silently
    torch.manual_seed(8)
    z = torch.randn(3, 4)
    with pytest.raises(RuntimeError, match="expected target dtype to be Long or Byte"):
        pt.cross_entropy(z, torch.tensor([0, 1, 3], dtype=torch.int32))
    torch.testing.assert_close(pt.cross_entropy(z, torch.tensor([0, 1, 3], dtype=torch.uint8)),
                               torch.nn.functional.cross_entropy(z, torch.tensor([0, 1, 3])))
    q = torch.softmax(torch.randn(3, 4), 1)
    with pytest.raises(RuntimeError, match="ignore_index is not supported"):
        pt.cross_entropy(z, q, ignore_index=1)
    grads = []
    for fn in (torch.nn.functional.cross_entropy, pt.cross_entropy):
        qq = q.clone().requires_grad_()
        fn(z, qq, label_smoothing=0.1).backward()
        grads.append(qq.grad)
    assert grads[1] is not None
    torch.testing.assert_close(grads[1], grads[0])


def test_zero_copy_in_and_out(monkeypatch):
    # The kernels read the tensors' own memory and their outputs become the
    # returned tensors: record the addresses the NumPy layer sees.
    seen = {}
    real_bn, real_softmax = pt._pybn.batch_norm_forward, pt._pybn.softmax

    def bn(x, *args, **kwargs):
        seen["x"] = x.__array_interface__["data"][0]
        out = real_bn(x, *args, **kwargs)
        seen["y"] = out.y.__array_interface__["data"][0]
        return out

    def softmax(z, *args, **kwargs):
        seen["z"] = z.__array_interface__["data"][0]
        seen["p"] = (out := real_softmax(z, *args, **kwargs)).__array_interface__["data"][0]
        return out

    monkeypatch.setattr(pt._pybn, "batch_norm_forward", bn)
    monkeypatch.setattr(pt._pybn, "softmax", softmax)
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(6, 4, 5, 5).to(memory_format=fmt)
        rm, rv = torch.zeros(4), torch.ones(4)
        y = pt.batch_norm(x, rm, rv, training=True)
        assert seen["x"] == x.data_ptr() and seen["y"] == y.data_ptr()
        assert rm.abs().sum() > 0  # the running statistics were updated
    z = torch.randn(16, 8)
    p = pt.softmax(z, 1)
    assert seen["z"] == z.data_ptr() and seen["p"] == p.data_ptr()


def test_patch_and_unpatch_swap_batch_norm_in_place():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 8), torch.nn.BatchNorm1d(8))
    params = [id(p) for p in model.parameters()]
    pt.patch(model)
    assert type(model[1]) is pt.BatchNorm2d and type(model[5]) is pt.BatchNorm1d
    assert [id(p) for p in model.parameters()] == params  # optimizers keep working
    model(torch.randn(5, 1, 8, 8))
    pt.unpatch(model)
    assert type(model[1]) is torch.nn.BatchNorm2d and type(model[5]) is torch.nn.BatchNorm1d


def test_torch_compile_runs_the_custom_ops_without_graph_breaks():
    # Eager calls take an autograd.Function (torch.library's dispatch costs
    # as much as a kernel at CNN sizes); traced code takes the custom ops.
    # Both must give the same bits, forward and backward.
    torch.manual_seed(5)

    def step(x, w, b, t):
        y = pt.batch_norm(x, None, None, w, b, True)
        return pt.cross_entropy(pt.log_softmax(y, 1), t, label_smoothing=0.1)

    x = torch.randn(10, 6)
    w, b = torch.rand(6), torch.rand(6)
    t = torch.randint(0, 6, (10,))
    explanation = torch._dynamo.explain(step)(x, w, b, t)
    assert explanation.graph_break_count == 0
    def normalized(x, w, b, g):  # the same kernels either way: the same bits
        return (pt.log_softmax(pt.batch_norm(x, None, None, w, b, True), 1) * g).sum()

    g = torch.randn(10, 6)
    for fn, other, exact in ((normalized, g, True), (step, t, False)):
        results = []
        for run in (fn, torch.compile(fn, backend="aot_eager", fullgraph=True)):
            xs, ws, bs = (a.clone().requires_grad_() for a in (x, w, b))
            loss = run(xs, ws, bs, other)
            loss.backward()
            results.append((loss.detach(), xs.grad, ws.grad, bs.grad))
        for eager, compiled in zip(*results):
            # traced cross-entropy reduces with PyTorch's ops (no data-dependent branch)
            torch.testing.assert_close(compiled, eager, **(dict(rtol=0, atol=0) if exact else {}))


def _digits():
    from pybn import datasets
    X, y = datasets.load_digits()
    split = datasets.split_standardize(X, y, seed=0)
    as_images = lambda a: torch.tensor(a, dtype=torch.float32).reshape(-1, 1, 8, 8)  # noqa: E731
    return (as_images(split.X_train), torch.tensor(split.y_train), as_images(split.X_test),
            torch.tensor(split.y_test))


def _cnn():
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1, bias=False), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, padding=1, bias=False), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(32 * 16, 10))


def _train(model, loss_fn, data, epochs=4):
    X, y, X_test, y_test = data
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(X), generator=g).split(32):
            opt.zero_grad()
            loss_fn(model(X[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return float((model(X_test).argmax(1) == y_test).float().mean())


def test_a_small_cnn_on_digits_learns_as_well_with_pybn_batch_norm():
    torch.manual_seed(0)
    data = _digits()
    base = _cnn()
    ours = pt.patch(copy.deepcopy(base))
    acc_torch = _train(base, torch.nn.CrossEntropyLoss(), data)
    acc_pybn = _train(ours, pt.CrossEntropyLoss(), data)
    assert acc_torch > 0.95 and acc_pybn > 0.95
    assert abs(acc_torch - acc_pybn) <= 0.02
