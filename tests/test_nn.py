"""Layers: whole-network gradients by finite differences, BatchNorm train vs
eval, state dicts, folding BN into Dense, bad arguments."""
import numpy as np
import pytest

from pybn import nn
from pybn.train import build_mlp
from helpers import check_gradient


def _network_loss_and_grads(model, X, y):
    loss_fn = nn.SoftmaxCrossEntropy()
    value = loss_fn(model.forward(X), y)
    model.backward(loss_fn.backward())
    return value


@pytest.mark.parametrize("batch_norm", [True, False])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_whole_network_gradients_match_finite_differences(batch_norm, activation, rng):
    X = rng.standard_normal((12, 5))
    y = rng.integers(0, 3, 12)
    model = build_mlp(5, 3, hidden=(7, 6), batch_norm=batch_norm, activation=activation, seed=1,
                      dtype="float64")
    if batch_norm:  # non-trivial gamma/beta
        for layer in model:
            if isinstance(layer, nn.BatchNorm):
                layer.gamma.data[...] = rng.uniform(0.5, 2, layer.num_features)
                layer.beta.data[...] = rng.standard_normal(layer.num_features)
    _network_loss_and_grads(model, X, y)
    for param in model.parameters():
        grad = param.grad.copy()
        original = param.data.copy()

        def loss_at(values, param=param, original=original):
            param.data[...] = values
            model.train()
            value = nn.SoftmaxCrossEntropy()(model.forward(X), y)
            param.data[...] = original
            return value

        check_gradient(loss_at, original, grad, rng, h=1e-5, rtol=1e-5)
    # and the gradient with respect to the input
    dX = model.backward(_grad_of_loss(model, X, y))
    check_gradient(lambda X_: nn.SoftmaxCrossEntropy()(model.forward(X_), y), X, dX, rng, h=1e-5, rtol=1e-5)


def _grad_of_loss(model, X, y):
    loss_fn = nn.SoftmaxCrossEntropy()
    loss_fn(model.forward(X), y)
    return loss_fn.backward()


def test_dense_before_batchnorm_has_no_bias():
    model = build_mlp(4, 3, hidden=(5,), batch_norm=True)
    assert model[0].b is None
    assert [name for name, _ in model.named_parameters()] == ["0.W", "1.gamma", "1.beta", "3.W", "3.b"]
    assert build_mlp(4, 3, hidden=(5,), batch_norm=False)[0].b is not None


def test_batchnorm_train_uses_batch_stats_eval_uses_running_averages(rng):
    bn = nn.BatchNorm(3, momentum=0.5, dtype=np.float64)
    X = rng.standard_normal((50, 3)) * 2 + 5
    y_train = bn.forward(X)
    np.testing.assert_allclose(y_train.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(bn.running_mean, 0.5 * X.mean(0))
    np.testing.assert_allclose(bn.running_var, 0.5 + 0.5 * X.var(0, ddof=1))
    bn.eval()
    y_eval = bn.forward(X)
    expected = (X - bn.running_mean) / np.sqrt(bn.running_var + bn.eps)
    np.testing.assert_allclose(y_eval, expected)
    rm = bn.running_mean.copy()
    bn.forward(X)  # eval never updates the running averages
    np.testing.assert_array_equal(bn.running_mean, rm)


def test_batchnorm_training_reuses_its_output_buffer(rng):
    bn = nn.BatchNorm(4, dtype=np.float64)
    X = rng.standard_normal((8, 4))
    first = bn.forward(X)
    second = bn.forward(X + 1)
    assert first is second  # no fresh allocation per training step
    bn.eval()
    assert bn.forward(X) is not bn.forward(X)


def test_state_dict_round_trip_and_errors(rng):
    model = build_mlp(4, 3, hidden=(5,), seed=0)
    model.forward(rng.standard_normal((6, 4)).astype(np.float32))
    with pytest.raises(TypeError, match="x: expected float32 like the layer's parameters, got float64"):
        model.forward(rng.standard_normal((6, 4)))
    state = model.state_dict()
    other = build_mlp(4, 3, hidden=(5,), seed=1)
    other.load_state_dict(state)
    for (name, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    with pytest.raises(ValueError, match="missing keys"):
        other.load_state_dict({k: v for k, v in state.items() if k != "0.W"})
    with pytest.raises(ValueError, match=r"state\['0.W'\]: expected shape"):
        other.load_state_dict({**state, "0.W": np.zeros((2, 2))})


def test_fold_batchnorm_gives_identical_eval_outputs(rng):
    model = build_mlp(6, 4, hidden=(8, 5), seed=2, dtype="float64")
    for _ in range(5):  # populate running statistics
        model.forward(rng.standard_normal((16, 6)) * 3 + 1)
    for layer in model:
        if isinstance(layer, nn.BatchNorm):
            layer.gamma.data[...] = rng.uniform(0.5, 2, layer.num_features)
            layer.beta.data[...] = rng.standard_normal(layer.num_features)
    model.eval()
    X = rng.standard_normal((10, 6))
    folded = nn.fold_batchnorm(model)
    assert not any(isinstance(layer, nn.BatchNorm) for layer in folded)
    assert len(folded) == len(model) - 2
    np.testing.assert_allclose(folded.forward(X), model.forward(X), rtol=1e-12, atol=1e-12)


def test_layer_bad_arguments():
    with pytest.raises(ValueError, match="out_features: expected an int >= 1"):
        nn.Dense(3, -1)
    with pytest.raises(TypeError, match="in_features: expected an int"):
        nn.Dense(2.5, 3)
    with pytest.raises(ValueError, match="init: expected 'he' or 'xavier'"):
        nn.Dense(3, 3, init="zeros")
    with pytest.raises(ValueError, match="num_features: expected an int >= 1"):
        nn.BatchNorm(0)
    with pytest.raises(ValueError, match=r"momentum: expected a number in \[0, 1\]"):
        nn.BatchNorm(3, momentum=2)
    with pytest.raises(ValueError, match=r"x: expected shape \(m, 3\)"):
        nn.Dense(3, 2).forward(np.ones((4, 2)))
    with pytest.raises(TypeError, match=r"layers\[1\]: expected a pybn.nn.Module"):
        nn.Sequential(nn.ReLU(), "relu")
    for layer in (nn.Dense(3, 2), nn.BatchNorm(3)):  # was an AttributeError (x.ndim, x.dtype)
        with pytest.raises(TypeError, match="x: expected a NumPy array, got list"):
            layer.forward([[1.0, 2.0, 3.0]])
