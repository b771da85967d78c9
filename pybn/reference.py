"""Textbook NumPy versions of every op in pybn.functional: the oracle the C
kernels are tested against.

Written for clarity, not speed: each function is the formula from the course
notes and docs/design.md, computed in float64 and returned in the input's dtype.
Depends on NumPy alone; validates nothing.
"""
import numpy as np


def _moveaxis_last(a, axis):
    return np.moveaxis(np.asarray(a, dtype=np.float64), axis, -1)


def _channel_shape(ndim, axis):
    shape = [1] * ndim
    shape[axis] = -1
    return shape


def batch_norm_forward(x, gamma=None, beta=None, *, running_mean=None, running_var=None,
                       training=True, momentum=0.1, eps=1e-5, axis=1):
    """Returns (y, mean, invstd); updates running_mean/var in place."""
    x = np.asarray(x)
    dtype = x.dtype
    axis = axis % x.ndim
    xd = x.astype(np.float64)
    reduce_axes = tuple(i for i in range(x.ndim) if i != axis)
    channels = x.shape[axis]
    shape = _channel_shape(x.ndim, axis)
    if training:
        n = x.size // channels
        mu = xd.mean(axis=reduce_axes)
        var = ((xd - mu.reshape(shape)) ** 2).mean(axis=reduce_axes)
        if running_mean is not None:
            running_mean[...] = (1 - momentum) * running_mean + momentum * mu
        if running_var is not None:
            running_var[...] = (1 - momentum) * running_var + momentum * var * n / (n - 1)
    else:
        mu = np.asarray(running_mean, np.float64)
        var = np.asarray(running_var, np.float64)
    invstd = 1.0 / np.sqrt(var + eps)
    g = np.ones(channels) if gamma is None else np.asarray(gamma, np.float64)
    b = np.zeros(channels) if beta is None else np.asarray(beta, np.float64)
    x_hat = (xd - mu.reshape(shape)) * invstd.reshape(shape)
    y = g.reshape(shape) * x_hat + b.reshape(shape)
    return y.astype(dtype), mu.astype(dtype), invstd.astype(dtype)


def batch_norm_backward(dy, x, gamma, mean, invstd, *, training=True, axis=1):
    """Returns (dx, dgamma, dbeta)."""
    x = np.asarray(x)
    dtype = x.dtype
    axis = axis % x.ndim
    reduce_axes = tuple(i for i in range(x.ndim) if i != axis)
    channels = x.shape[axis]
    n = x.size // channels
    shape = _channel_shape(x.ndim, axis)
    dy = np.asarray(dy, np.float64)
    g = np.ones(channels) if gamma is None else np.asarray(gamma, np.float64)
    istd = np.asarray(invstd, np.float64).reshape(shape)
    x_hat = (x.astype(np.float64) - np.asarray(mean, np.float64).reshape(shape)) * istd
    dbeta = dy.sum(axis=reduce_axes)
    dgamma = (dy * x_hat).sum(axis=reduce_axes)
    if training:
        dx = g.reshape(shape) * istd / n * (
            n * dy - dbeta.reshape(shape) - x_hat * dgamma.reshape(shape))
    else:
        dx = g.reshape(shape) * istd * dy
    return dx.astype(dtype), dgamma.astype(dtype), dbeta.astype(dtype)


def softmax(z, axis=-1):
    z = np.asarray(z)
    zd = z.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.exp(zd - zd.max(axis=axis, keepdims=True, initial=-np.inf))
        return (e / e.sum(axis=axis, keepdims=True)).astype(z.dtype)


def log_softmax(z, axis=-1):
    z = np.asarray(z)
    zd = z.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        shifted = zd - zd.max(axis=axis, keepdims=True, initial=-np.inf)
        return (shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))).astype(z.dtype)


def softmax_backward(dp, p, axis=-1):
    p = np.asarray(p)
    pd, dpd = p.astype(np.float64), np.asarray(dp, np.float64)
    return (pd * (dpd - (dpd * pd).sum(axis=axis, keepdims=True))).astype(p.dtype)


def log_softmax_backward(dlp, lp, axis=-1):
    lp = np.asarray(lp)
    dlpd = np.asarray(dlp, np.float64)
    return (dlpd - np.exp(lp.astype(np.float64)) * dlpd.sum(axis=axis, keepdims=True)).astype(lp.dtype)


def one_hot(labels, num_classes, dtype=np.float64):
    labels = np.asarray(labels)
    encoded = np.zeros((labels.size, num_classes), dtype)
    encoded[np.arange(labels.size), labels] = 1
    return encoded


def softmax_cross_entropy(logits, target, *, reduction="mean", label_smoothing=0.0):
    """Returns (loss, dlogits); loss = -sum(q * log_softmax(z)) per row."""
    logits = np.asarray(logits)
    m, classes = logits.shape
    target = np.asarray(target)
    q = one_hot(target, classes) if target.dtype.kind in "iu" else target.astype(np.float64)
    q = (1 - label_smoothing) * q + label_smoothing / classes
    logp = log_softmax(logits.astype(np.float64), axis=1)
    with np.errstate(invalid="ignore"):
        losses = -(q * logp).sum(axis=1)
    dz = np.exp(logp) * q.sum(axis=1, keepdims=True) - q
    if reduction == "none":
        return losses.astype(logits.dtype), dz.astype(logits.dtype)
    if reduction == "sum":
        return logits.dtype.type(losses.sum()), dz.astype(logits.dtype)
    return logits.dtype.type(losses.mean()), (dz / m).astype(logits.dtype)
