"""Layers with explicit forward and backward passes over NumPy arrays.

Rows are examples: a Dense layer maps (m, in) to (m, out). Each layer
caches what its backward pass needs during forward and stores parameter
gradients in `Parameter.grad`; optimizers read them from there. The hot
paths (BatchNorm, SoftmaxCrossEntropy) call pybn.functional, and reuse
their output buffers between steps of the same batch size.
"""
import numpy as np

from . import functional as F

__all__ = ["manual_seed", "Parameter", "Module", "Dense", "BatchNorm", "ReLU", "Tanh", "Sequential",
           "SoftmaxCrossEntropy", "fold_batchnorm"]


class Parameter:
    """A trainable array and the gradient of the loss with respect to it."""

    def __init__(self, data):
        self.data = data
        self.grad = np.zeros_like(data)

    def __repr__(self):
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


# Where layers built without rng= draw their initial weights: seeded by
# manual_seed, as torch.manual_seed seeds PyTorch's layers.
_default_rng = np.random.default_rng()


def manual_seed(seed):
    """Seed the generator that layers built without `rng=` draw from, so
    that a script building its model by hand is reproducible."""
    global _default_rng
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected an int >= 0, got {seed!r}")
    _default_rng = np.random.default_rng(int(seed))


class Module:
    """Base layer: forward(x), backward(grad), parameters(), train()/eval(),
    state_dict()/load_state_dict()."""

    training = True

    def extra_repr(self):
        """The constructor arguments shown by repr, as PyTorch's modules."""
        return ""

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"

    def forward(self, x):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError

    def __call__(self, x):
        return self.forward(x)

    def named_parameters(self):
        """(name, Parameter) pairs, in a stable order."""
        return [(name, value) for name, value in vars(self).items() if isinstance(value, Parameter)]

    def named_buffers(self):
        """(name, array) pairs of non-trainable state (e.g. running averages)."""
        return []

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def train(self, mode=True):
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def state_dict(self):
        state = {name: p.data.copy() for name, p in self.named_parameters()}
        state.update({name: b.copy() for name, b in self.named_buffers()})
        return state

    def load_state_dict(self, state):
        """Copy arrays into this module's parameters and buffers, in place
        (so optimizers holding the parameters keep working)."""
        own = dict(self.named_parameters())
        own_arrays = {name: p.data for name, p in own.items()}
        own_arrays.update(self.named_buffers())
        missing = sorted(set(own_arrays) - set(state))
        unexpected = sorted(set(state) - set(own_arrays))
        if missing or unexpected:
            raise ValueError(f"state: missing keys {missing}, unexpected keys {unexpected}")
        for name, target in own_arrays.items():
            value = np.asarray(state[name])
            if value.shape != target.shape:
                raise ValueError(f"state[{name!r}]: expected shape {target.shape}, got {value.shape}")
            target[...] = value


class Dense(Module):
    """y = x @ W + b. init="he" (ReLU nets) or "xavier" (tanh nets).
    Build it with bias=False when a BatchNorm follows: beta replaces b."""

    def __init__(self, in_features, out_features, bias=True, init="he", rng=None, dtype=np.float32):
        in_features = _positive_int(in_features, "in_features")
        out_features = _positive_int(out_features, "out_features")
        if init not in ("he", "xavier"):
            raise ValueError(f"init: expected 'he' or 'xavier', got {init!r}")
        rng = _default_rng if rng is None else np.random.default_rng(rng)
        std = np.sqrt((2.0 if init == "he" else 1.0) / in_features)
        self.W = Parameter((rng.standard_normal((in_features, out_features)) * std).astype(dtype))
        self.b = Parameter(np.zeros(out_features, dtype)) if bias else None
        self.in_features, self.out_features = in_features, out_features

    def named_parameters(self):
        return [("W", self.W)] + ([("b", self.b)] if self.b is not None else [])

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.b is not None}, dtype={self.W.data.dtype}")

    def forward(self, x):
        _check_array(x)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"x: expected shape (m, {self.in_features}), got {x.shape}")
        _check_dtype(x, self.W.data.dtype)
        self._x = x
        y = x @ self.W.data
        if self.b is not None:
            y += self.b.data
        return y

    def backward(self, grad):
        np.matmul(self._x.T, grad, out=self.W.grad)
        if self.b is not None:
            np.sum(grad, axis=0, out=self.b.grad)
        return grad @ self.W.data.T


class BatchNorm(Module):
    """Batch normalization of each feature (channel `axis`): batch statistics
    in training, the running averages (EWMA with `momentum`) in eval."""

    def __init__(self, num_features, momentum=0.1, eps=1e-5, axis=1, dtype=np.float32):
        num_features = _positive_int(num_features, "num_features")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum: expected a number in [0, 1], got {momentum}")
        if not eps > 0:
            raise ValueError(f"eps: expected a number > 0, got {eps}")
        self.gamma = Parameter(np.ones(num_features, dtype))
        self.beta = Parameter(np.zeros(num_features, dtype))
        self.running_mean = np.zeros(num_features, dtype)
        self.running_var = np.ones(num_features, dtype)
        self.num_features, self.momentum, self.eps, self.axis = num_features, momentum, eps, axis
        self._y = self._dx = None

    def named_parameters(self):
        return [("gamma", self.gamma), ("beta", self.beta)]

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps:g}, momentum={self.momentum:g}, axis={self.axis}, "
                f"dtype={self.gamma.data.dtype}")

    def named_buffers(self):
        return [("running_mean", self.running_mean), ("running_var", self.running_var)]

    def forward(self, x):
        _check_array(x)
        _check_dtype(x, self.gamma.data.dtype)
        # Training steps write into the same buffer each time (no page
        # faults for a fresh output); eval outputs are handed to the caller,
        # so they get new arrays.
        out = None
        if self.training:
            out = self._y = _reuse(self._y, x)
        result = F.batch_norm_forward(
            x, self.gamma.data, self.beta.data, running_mean=self.running_mean,
            running_var=self.running_var, training=self.training, momentum=self.momentum,
            eps=self.eps, axis=self.axis, out=out)
        self._x, self._mean, self._invstd = x, result.mean, result.invstd
        return result.y

    def backward(self, grad):
        self._dx = _reuse(self._dx, grad)
        dx, dgamma, dbeta = F.batch_norm_backward(
            grad, self._x, self.gamma.data, self._mean, self._invstd, training=self.training,
            axis=self.axis, out=self._dx)
        self.gamma.grad[...] = dgamma
        self.beta.grad[...] = dbeta
        return dx


def _check_array(x):
    """Layers take NumPy arrays, as PyTorch's take tensors."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x: expected a NumPy array, got {type(x).__name__}")


def _check_dtype(x, dtype):
    """Layers compute in their parameters' dtype, as PyTorch's: data of
    another float dtype is a mistake to report, not to promote silently."""
    if x.dtype != dtype:
        raise TypeError(f"x: expected {dtype} like the layer's parameters, got {x.dtype} "
                        f"(cast the data, or build the model with dtype={x.dtype.name!r})")


def _reuse(buffer, like):
    """The layer's output buffer if it still fits `like`, else a new one."""
    if buffer is not None and buffer.shape == like.shape and buffer.dtype == like.dtype:
        return buffer
    return np.empty_like(like, order="C")


class ReLU(Module):
    def forward(self, x):
        self._mask = x > 0
        return x * self._mask

    def backward(self, grad):
        return grad * self._mask


class Tanh(Module):
    def forward(self, x):
        self._y = np.tanh(x)
        return self._y

    def backward(self, grad):
        return grad * (1.0 - self._y * self._y)


class Sequential(Module):
    """Layers applied in order; backward runs them in reverse."""

    def __init__(self, *layers):
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"layers[{i}]: expected a pybn.nn.Module, got {type(layer).__name__}")
        self.layers = list(layers)

    def __iter__(self):
        return iter(self.layers)

    def __repr__(self):
        lines = [f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers)]
        return "Sequential(\n" + "\n".join(lines) + "\n)" if lines else "Sequential()"

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, i):
        return self.layers[i]

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, grad):
        for layer in reversed(self.layers):
            grad = layer.backward(grad)
        return grad

    def named_parameters(self):
        return [(f"{i}.{name}", p) for i, layer in enumerate(self.layers)
                for name, p in layer.named_parameters()]

    def named_buffers(self):
        return [(f"{i}.{name}", b) for i, layer in enumerate(self.layers)
                for name, b in layer.named_buffers()]

    def train(self, mode=True):
        super().train(mode)
        for layer in self.layers:
            layer.train(mode)
        return self


class SoftmaxCrossEntropy:
    """Mean softmax cross-entropy of logits against integer labels (or
    probabilities); one fused kernel gives the loss and dz = (yhat - y)/m."""

    def __init__(self, label_smoothing=0.0):
        self.label_smoothing = label_smoothing
        self._grad = None

    def __call__(self, logits, target):
        return self.forward(logits, target)

    def forward(self, logits, target):
        out = None
        if isinstance(logits, np.ndarray) and logits.dtype.kind == "f":
            out = self._grad = _reuse(self._grad, logits)  # as BatchNorm: no fresh pages per step
        loss, self._grad = F.softmax_cross_entropy(logits, target, label_smoothing=self.label_smoothing,
                                                   out=out)
        return float(loss)

    def backward(self):
        return self._grad


def fold_batchnorm(model):
    """An inference-only copy of a Sequential in which each BatchNorm that
    directly follows a Dense is folded into that Dense (W*alpha, shift):
    the same eval outputs, one layer fewer."""
    if not isinstance(model, Sequential):
        raise TypeError(f"model: expected a pybn.nn.Sequential, got {type(model).__name__}")
    folded = []
    layers = list(model)
    i = 0
    while i < len(layers):
        layer = layers[i]
        follower = layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(layer, Dense) and isinstance(follower, BatchNorm):
            alpha = follower.gamma.data / np.sqrt(follower.running_var + follower.eps)
            bias = layer.b.data if layer.b is not None else 0.0
            dense = Dense(layer.in_features, layer.out_features, bias=True, dtype=layer.W.data.dtype)
            dense.W.data[...] = layer.W.data * alpha
            dense.b.data[...] = (bias - follower.running_mean) * alpha + follower.beta.data
            folded.append(dense)
            i += 2
        else:
            folded.append(layer)
            i += 1
    return Sequential(*folded).eval()


def _positive_int(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int >= 1, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {value}")
    return int(value)
