"""PyTorch compatibility: committed golden values made by PyTorch 2.13 CPU
(tests/golden/make_golden.py), plus live comparisons when torch is installed."""
import pathlib

import numpy as np
import pytest

import pybn
from helpers import assert_close

GOLDEN = pathlib.Path(__file__).parent / "golden"


def _load(name):
    with np.load(GOLDEN / name, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


BN = _load("batchnorm_torch.npz")
SM = _load("softmax_torch.npz")


@pytest.mark.parametrize("case", range(int(BN["n_cases"])))
def test_batch_norm_matches_pytorch_golden(case, threads):
    g = {k.split(".", 1)[1]: v for k, v in BN.items() if k.startswith(f"bn{case}.")}
    x = g["x"]
    rm, rv = g["running_mean0"].copy(), g["running_var0"].copy()
    training, axis = bool(g["training"]), int(g["axis"])
    y, mean, invstd = pybn.batch_norm_forward(
        x, g.get("gamma"), g.get("beta"), running_mean=rm, running_var=rv, training=training,
        momentum=float(g["momentum"]), eps=float(g["eps"]), axis=axis)
    scale = float(np.abs(x).max()) * 4
    assert_close(y, g["y"], scale=4)
    assert_close(rm, g["running_mean"], scale=scale)
    assert_close(rv, g["running_var"], scale=scale)
    dx, dgamma, dbeta = pybn.batch_norm_backward(g["dy"], x, g.get("gamma"), mean, invstd,
                                                 training=training, axis=axis)
    n = x.size // x.shape[axis]
    # with a mean of 1e4, float64 x - mean keeps ~12 digits: scale accordingly
    assert_close(dx, g["dx"], scale=4, factor=1e3 if scale > 1e4 else 10)
    if "gamma" in g:
        assert_close(dgamma, g["dgamma"], scale=4 * np.sqrt(n), factor=1e3 if scale > 1e4 else 10)
        assert_close(dbeta, g["dbeta"], scale=4 * np.sqrt(n))


@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_softmax_extreme_rows_match_pytorch_golden(dtype, threads):
    z = SM[f"extreme.{dtype}.z"]
    np.testing.assert_array_equal(np.isnan(pybn.softmax(z)), np.isnan(SM[f"extreme.{dtype}.softmax"]))
    assert_close(pybn.softmax(z), SM[f"extreme.{dtype}.softmax"])
    assert_close(pybn.log_softmax(z), SM[f"extreme.{dtype}.log_softmax"], scale=10)


@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("axis", [-1, 1, 0])
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_axes_and_gradients_match_pytorch_golden(op, axis, dtype, threads):
    p = f"axis{axis}.{dtype}."
    z, g = SM[p + "z"], SM[p + "g"]
    y = getattr(pybn, op)(z, axis=axis)
    assert_close(y, SM[p + op], scale=10)
    backward = pybn.softmax_backward if op == "softmax" else pybn.log_softmax_backward
    assert_close(backward(g, y, axis=axis), SM[p + op + "_grad"], scale=10)


@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("target", ["labels", "probs"])
def test_cross_entropy_matches_pytorch_golden(target, smoothing, reduction, dtype, threads):
    logits = SM[f"ce.{dtype}.logits"]
    loss, grad = pybn.softmax_cross_entropy(logits, SM[f"ce.{dtype}.{target}"], reduction=reduction,
                                            label_smoothing=smoothing)
    p = f"ce.{dtype}.{reduction}.{smoothing}.{target}."
    assert_close(loss, SM[p + "loss"], scale=10)
    assert_close(grad, SM[p + "grad"])


# ---- live comparisons, when PyTorch is installed ---------------------------------


@pytest.mark.parametrize("shape,axis", [((16, 7), 1), ((4, 6, 5, 3), 1), ((4, 5, 3, 6), -1)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_matches_live_pytorch(shape, axis, training, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = rng.standard_normal(shape).astype(np.float32) * 3 + 1
    channels = shape[axis]
    gamma, beta = rng.standard_normal(channels).astype(np.float32), rng.standard_normal(channels).astype(np.float32)
    rm, rv = rng.standard_normal(channels).astype(np.float32), rng.uniform(0.5, 2, channels).astype(np.float32)
    rm_t, rv_t = torch.tensor(rm), torch.tensor(rv)
    xt = torch.tensor(np.moveaxis(x, axis, 1), requires_grad=True)
    yt = F.batch_norm(xt, rm_t, rv_t, torch.tensor(gamma), torch.tensor(beta), training=training)
    y, _, _ = pybn.batch_norm_forward(x, gamma, beta, running_mean=rm, running_var=rv,
                                      training=training, axis=axis)
    assert_close(y, np.moveaxis(yt.detach().numpy(), 1, axis), scale=4)
    assert_close(rm, rm_t.numpy(), scale=4)
    assert_close(rv, rv_t.numpy(), scale=4)


def test_softmax_cross_entropy_matches_live_pytorch(rng):
    torch = pytest.importorskip("torch")
    z = (rng.standard_normal((64, 100)) * 4).astype(np.float32)
    y = rng.integers(0, 100, 64)
    zt = torch.tensor(z, requires_grad=True)
    loss_t = torch.nn.functional.cross_entropy(zt, torch.tensor(y), label_smoothing=0.05)
    loss_t.backward()
    loss, dz = pybn.softmax_cross_entropy(z, y, label_smoothing=0.05)
    assert_close(loss, loss_t.item(), scale=10)
    assert_close(dz, zt.grad.numpy())
    assert_close(pybn.log_softmax(z, axis=0), torch.log_softmax(torch.tensor(z), 0).numpy(), scale=10)
