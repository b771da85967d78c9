"""Public kernel functions: one compiled entry point each, and the
conversions that bring any other call to it.

Each function first hands its arguments to the compiled entry point of the
same name in _kernels, which runs the kernel when they are already what it
reads (the plain case: C-contiguous aligned native float arrays of matching
shapes, out= absent or such an array apart from the inputs, flags of exact
type) and returns None for anything else. Everything else is converted here
once, with every structural mistake raised as a ValueError or TypeError
naming the argument, and handed to the same entry point; the domain of each
scalar (eps, momentum, label_smoothing, labels) is checked by the C kernel
alone and named by the entry point. Inputs of any strides are made
C-contiguous once; outputs are new C-contiguous arrays unless `out=` is
given. Semantics follow torch.nn.functional.batch_norm, torch.softmax /
log_softmax and torch.nn.functional.cross_entropy; see docs/design.md.
"""
import math
import numbers
from typing import NamedTuple

import numpy as np

from . import _kernels

__all__ = [
    "BatchNormOutput",
    "batch_norm_forward",
    "batch_norm_backward",
    "softmax",
    "log_softmax",
    "softmax_backward",
    "log_softmax_backward",
    "softmax_cross_entropy",
    "one_hot",
]

_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
# plain ints: converting the IntEnum on every call costs more than the call
_SOFTMAX, _LOG_SOFTMAX, _SOFTMAX_BACKWARD, _LOG_SOFTMAX_BACKWARD = (
    int(op) for op in (_kernels.SoftmaxOp.SOFTMAX, _kernels.SoftmaxOp.LOG_SOFTMAX,
                       _kernels.SoftmaxOp.SOFTMAX_BACKWARD, _kernels.SoftmaxOp.LOG_SOFTMAX_BACKWARD))
_FLOAT_DTYPES = (_F32, _F64)


class BatchNormOutput(NamedTuple):
    y: np.ndarray
    mean: np.ndarray
    invstd: np.ndarray


# ---- argument helpers ---------------------------------------------------------


def _float_array(a, name, dtype=None):
    """`a` as an ndarray of float32/float64; integers become float64 (as NumPy
    promotes them), or `dtype` when given. Anything else is a TypeError."""
    if type(a) is np.ndarray and (a.dtype is _F32 or a.dtype is _F64) and (dtype is None or a.dtype is dtype):
        return a  # the common case, checked first: small calls are overhead-bound
    if isinstance(a, np.ma.MaskedArray):
        raise TypeError(f"{name}: expected a plain array, got a masked array "
                        f"(its mask would be ignored; use a.filled() or drop the masked rows)")
    if isinstance(a, np.ndarray):
        arr = a
    else:
        try:
            arr = np.asarray(a)
        except Exception as exc:  # ragged lists and the like
            raise TypeError(f"{name}: expected an array of floats, got {type(a).__name__}") from exc
    kind = arr.dtype.kind
    if kind in "iu":
        return arr.astype(dtype or np.float64)
    if kind == "f" and arr.dtype.itemsize in (4, 8) and not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))  # byte-swapped data: same values, native order
    if arr.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name}: expected a float32 or float64 array, got dtype {arr.dtype}")
    if dtype is not None and arr.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {np.dtype(dtype)} to match the input, got {arr.dtype}")
    return arr


def _same_dtype(a, name, like, like_name):
    """A second tensor operand: same shape and dtype as `like`."""
    arr = _float_array(a, name, like.dtype)
    if arr.shape != like.shape:
        raise ValueError(f"{name}: expected shape {like.shape} like {like_name}, got {arr.shape}")
    return arr


def _flat(a):
    """`a` C-contiguous and aligned (the kernels read any such array as
    flat), copying only when its strides or address need it."""
    a = np.ascontiguousarray(a)
    return a if a.flags.aligned else a.copy()


def _axis(axis, ndim, name="axis"):
    if type(axis) is int and -ndim <= axis < ndim:
        return axis % ndim
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type(axis).__name__}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}: {axis} is out of range for an array of {ndim} dimensions")
    return int(axis) % ndim


def _split(shape, axis):
    """(outer, dim, inner) such that the array is viewed as that 3-D shape."""
    if len(shape) == 2:
        return (1, shape[0], shape[1]) if axis == 0 else (shape[0], shape[1], 1)
    return math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])


def _real(value, name, expected):
    """`value` as a float; its domain (`expected`) is the kernel's to check,
    except that a number beyond float's range is out of it already."""
    if type(value) is float:
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{name}: expected {expected}, got a number beyond float range") from None


def _flag(value, name):
    """A bool flag: True/False or numpy's bool, nothing that is merely truthy
    (training="False" must not mean training)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name}: expected a bool, got {type(value).__name__}")


def _apart(updated, updated_name, others):
    """Raise if the in-place array `updated` shares memory with any of the
    (name, array) pairs in `others`: the kernel reads them while it writes."""
    for name, other in others:
        if other is None or not np.may_share_memory(updated, other):
            continue
        try:
            shared = np.shares_memory(updated, other, max_work=10**6)
        except np.exceptions.TooHardError:
            shared = True
        if shared:
            raise ValueError(f"{updated_name}: expected an array apart from {name} "
                             f"(it is updated in place while {name} is read), but they share memory")


def _channel_vector(a, name, channels, dtype, writeable=False):
    """A per-channel 1-D array of length `channels` (gamma, beta, statistics)."""
    if a is None:
        return None
    if type(a) is np.ndarray and a.dtype is dtype and a.shape == (channels,) and (
            not writeable or a.flags.writeable):
        return a  # the common case, checked first
    if writeable:
        if not isinstance(a, np.ndarray) or isinstance(a, np.ma.MaskedArray):
            raise TypeError(f"{name}: expected a numpy array (it is updated in place), "
                            f"got {type(a).__name__}")
        if a.dtype != dtype:
            raise TypeError(f"{name}: expected dtype {np.dtype(dtype)} to match x "
                            f"(it is updated in place), got {a.dtype}")
        if not a.flags.writeable:
            raise ValueError(f"{name}: expected a writeable array (it is updated in place)")
        arr = a
    else:
        arr = _float_array(a, name)
        if arr.dtype != dtype:
            arr = arr.astype(dtype)
    if arr.ndim != 1 or arr.shape[0] != channels:
        raise ValueError(f"{name}: expected shape ({channels},), one value per channel, got {arr.shape}")
    return arr


def _output(out, shape, dtype, inputs):
    """(kernel_out, result): the C-contiguous array the kernel writes and the
    array returned. `out` must match exactly; if it is strided or overlaps an
    input, the kernel writes a fresh array that is then copied into it."""
    if out is None:
        fresh = np.empty(shape, dtype)
        return fresh, fresh
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out: expected a numpy array, got {type(out).__name__}")
    if out.shape != tuple(shape) or out.dtype != dtype:
        raise ValueError(f"out: expected shape {tuple(shape)} and dtype {np.dtype(dtype)}, "
                         f"got shape {out.shape} and dtype {out.dtype}")
    if not out.flags.writeable:
        raise ValueError("out: expected a writeable array")
    if out.flags.c_contiguous and out.flags.aligned and not any(
            np.may_share_memory(out, a) for a in inputs if a is not None):
        return out, out
    return np.empty(shape, dtype), out


def _finish(kernel_out, result):
    """Copy the kernel's output into `out=` when it wrote elsewhere."""
    if kernel_out is not result:
        result[...] = kernel_out
    return result


# ---- batch normalization ------------------------------------------------------


def _batch_norm_input(x, axis):
    """(x as a float array, axis normalized, channels), or a named error."""
    x = _float_array(x, "x")
    if x.ndim < 2:
        raise ValueError(f"x: expected an array with at least 2 dimensions "
                         f"(batch, channels, ...), got shape {x.shape}")
    axis = _axis(axis, x.ndim)
    outer, channels, inner = _split(x.shape, axis)
    if channels == 0 or outer * inner == 0:
        raise ValueError(f"x: expected at least one value per channel, got shape {x.shape}")
    return x, axis, channels


def batch_norm_forward(x, gamma=None, beta=None, *, running_mean=None, running_var=None,
                       training=True, momentum=0.1, eps=1e-5, axis=1, out=None):
    """Batch normalization over every axis but `axis` (the channels).

    training=True normalizes with the batch statistics (biased variance) and
    updates running_mean/running_var in place when given, as
    ``running = (1 - momentum) * running + momentum * batch`` with the
    unbiased variance; they must then share no memory with x, gamma, beta
    or each other. training=False normalizes with the running statistics,
    which are then required. gamma/beta default to 1/0 and are converted to
    x's dtype. A NaN or inf in a channel makes that channel's statistics and
    outputs NaN/inf as in PyTorch. Returns BatchNormOutput(y, mean, invstd),
    with invstd = 1/sqrt(var + eps): what batch_norm_backward needs.
    """
    result = _kernels.batch_norm_forward(x, gamma, beta, running_mean, running_var, training,
                                         momentum, eps, axis, out)
    if result is not None:
        return BatchNormOutput._make(result)
    x, axis, channels = _batch_norm_input(x, axis)
    dtype = x.dtype
    eps = _real(eps, "eps", "a finite number > 0")
    momentum = _real(momentum, "momentum", "a number in [0, 1]")
    training = _flag(training, "training")
    gamma = _channel_vector(gamma, "gamma", channels, dtype)
    beta = _channel_vector(beta, "beta", channels, dtype)
    running_mean = _channel_vector(running_mean, "running_mean", channels, dtype, writeable=training)
    running_var = _channel_vector(running_var, "running_var", channels, dtype, writeable=training)
    if not training and (running_mean is None or running_var is None):
        raise ValueError("running_mean, running_var: both are required when training=False")
    if training:
        inputs = [("x", x), ("gamma", gamma), ("beta", beta)]
        if running_mean is not None:
            _apart(running_mean, "running_mean", inputs + [("running_var", running_var)])
        if running_var is not None:
            _apart(running_var, "running_var", inputs)

    y_flat, y = _output(out, x.shape, dtype, [x, gamma, beta, running_mean, running_var])
    # Strided or misaligned running statistics are updated through a
    # contiguous copy that is written back afterwards.
    rm = None if running_mean is None else _flat(running_mean)
    rv = None if running_var is None else _flat(running_var)
    result = _kernels.batch_norm_forward(_flat(x), None if gamma is None else _flat(gamma),
                                         None if beta is None else _flat(beta), rm, rv, training,
                                         momentum, eps, axis, y_flat)
    _converted(result, "batch_norm_forward")
    if training:
        for given, updated in ((running_mean, rm), (running_var, rv)):
            if given is not None and updated is not given:
                given[...] = updated
    return BatchNormOutput(_finish(y_flat, y), result[1], result[2])


def batch_norm_backward(dy, x, gamma, mean, invstd, *, training=True, axis=1, out=None):
    """Gradients (dx, dgamma, dbeta) of batch_norm_forward given dy = dL/dy.

    mean and invstd are the ones batch_norm_forward returned. training=True
    differentiates through the batch statistics; training=False treats them
    as constants (dx = gamma*invstd*dy). `out=` receives dx.
    """
    result = _kernels.batch_norm_backward(dy, x, gamma, mean, invstd, training, axis, out)
    if result is not None:
        return result
    x, axis, channels = _batch_norm_input(x, axis)
    dtype = x.dtype
    dy = _same_dtype(dy, "dy", x, "x")
    training = _flag(training, "training")
    gamma = _channel_vector(gamma, "gamma", channels, dtype)
    if mean is None or invstd is None:
        raise ValueError("mean, invstd: both are required (use what batch_norm_forward returned)")
    mean = _channel_vector(mean, "mean", channels, dtype)
    invstd = _channel_vector(invstd, "invstd", channels, dtype)
    dx_flat, dx = _output(out, x.shape, dtype, [x, dy, gamma, mean, invstd])
    result = _kernels.batch_norm_backward(_flat(dy), _flat(x), None if gamma is None else _flat(gamma),
                                          _flat(mean), _flat(invstd), training, axis, dx_flat)
    _converted(result, "batch_norm_backward")
    return _finish(dx_flat, dx), result[1], result[2]


def _converted(result, op):
    """The entry point declined arguments this module converted for it."""
    if result is None:
        raise RuntimeError(f"{op}: converted arguments were not accepted (a bug in pybn)")


# ---- softmax family -----------------------------------------------------------


def _softmax_call(op, a, a_name, b, b_name, axis, out):
    result = _kernels.softmax_family(op, a, b, axis, out)
    if result is not None:
        return result
    a = _float_array(a, a_name)
    if a.ndim < 1:
        raise ValueError(f"{a_name}: expected an array with at least 1 dimension, got a scalar")
    if b is None and op >= _SOFTMAX_BACKWARD:
        raise ValueError(f"{b_name}: required")
    if b is not None:
        b = _flat(_same_dtype(b, b_name, a, a_name))
    axis = _axis(axis, a.ndim)
    out_flat, result = _output(out, a.shape, a.dtype, (a, b))
    written = _kernels.softmax_family(op, _flat(a), b, axis, out_flat)
    _converted(written, "softmax")
    return _finish(out_flat, result)


def softmax(z, axis=-1, out=None):
    """exp(z - max) / sum(exp(z - max)) along `axis`."""
    result = _kernels.softmax_family(_SOFTMAX, z, None, axis, out)  # the plain case, directly
    return result if result is not None else _softmax_call(_SOFTMAX, z, "z", None, None, axis, out)


def log_softmax(z, axis=-1, out=None):
    """(z - max) - log(sum(exp(z - max))) along `axis`."""
    result = _kernels.softmax_family(_LOG_SOFTMAX, z, None, axis, out)
    return result if result is not None else _softmax_call(_LOG_SOFTMAX, z, "z", None, None, axis, out)


def softmax_backward(dp, p, axis=-1, out=None):
    """dL/dz = p * (dp - sum(dp * p)) for p = softmax(z)."""
    return _softmax_call(_SOFTMAX_BACKWARD, dp, "dp", p, "p", axis, out)


def log_softmax_backward(dlp, lp, axis=-1, out=None):
    """dL/dz = dlp - exp(lp) * sum(dlp) for lp = log_softmax(z)."""
    return _softmax_call(_LOG_SOFTMAX_BACKWARD, dlp, "dlp", lp, "lp", axis, out)


_REDUCTIONS = ("mean", "sum", "none")


def _labels(target, rows, name="target"):
    """Integer labels of shape (rows,) as C-contiguous int64. Labels beyond
    int64 (uint64 above 2**63) wrap negative and are rejected by range."""
    labels = np.asarray(target)
    if labels.shape != (rows,):
        raise ValueError(f"{name}: expected integer labels of shape ({rows},), got {labels.shape}")
    return _flat(labels.astype(np.int64, copy=False))


def softmax_cross_entropy(logits, target, *, reduction="mean", label_smoothing=0.0, out=None):
    """Fused softmax + cross-entropy: (loss, dlogits) in one pass per row.

    target is integer labels of shape (m,) in [0, C) or probabilities of
    shape (m, C). Label smoothing s mixes the target with the uniform
    distribution, q = (1-s)*target + s/C, as PyTorch. dlogits is the
    gradient of the returned loss: softmax(z) - q for each row (the course's
    dz = yhat - y), divided by m for reduction="mean". The loss is a scalar
    of logits' dtype for "mean"/"sum" and an (m,) array for "none". `out=`
    receives dlogits (a training loop's buffer, reused between steps).
    """
    result = _kernels.cross_entropy(logits, target, reduction, label_smoothing, out)
    if result is None:
        # not the plain case: check and convert, then the same entry point
        logits, target, reduction, label_smoothing = _cross_entropy_args(logits, target, reduction,
                                                                         label_smoothing)
        kernel_out, out = _output(out, logits.shape, logits.dtype, (logits, target))
        result = _kernels.cross_entropy(logits, target, reduction, label_smoothing, kernel_out)
        _converted(result, "softmax_cross_entropy")
        result = result[0], _finish(result[1], out)
    loss, dlogits = result
    if reduction == "none":
        with np.errstate(over="ignore"):  # a loss beyond float32's range is inf
            return loss.astype(dlogits.dtype, copy=False), dlogits
    return dlogits.dtype.type(loss), dlogits


def _cross_entropy_args(logits, target, reduction, label_smoothing):
    """The arguments of softmax_cross_entropy checked and converted to the
    plain case: C-contiguous float logits, int64 labels in range or
    probabilities of logits' dtype, a float smoothing."""
    logits = _float_array(logits, "logits")
    if logits.ndim != 2:
        raise ValueError(f"logits: expected a 2-D array (m, C), got shape {logits.shape}")
    rows, classes = logits.shape
    if classes < 1:
        raise ValueError(f"logits: expected at least one class, got shape {logits.shape}")
    if rows < 1:
        raise ValueError(f"logits: expected at least one row, got shape {logits.shape}")
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise ValueError(f"reduction: expected one of {_REDUCTIONS}, got {reduction!r}")
    label_smoothing = _real(label_smoothing, "label_smoothing", "a number in [0, 1]")
    if isinstance(target, np.ma.MaskedArray):
        raise TypeError("target: expected a plain array, got a masked array (its mask would be ignored)")
    target_arr = np.asarray(target)
    if target_arr.dtype.kind in "iu":
        target = _labels(target_arr, rows)  # their range is the kernel's to check
    elif target_arr.dtype.kind == "f" or target_arr.dtype.kind == "O":
        probs = _float_array(target_arr, "target")
        if probs.shape != logits.shape:
            hint = " (integer class labels have shape (m,))" if probs.ndim == 1 else ""
            raise ValueError(f"target: expected probabilities of shape {logits.shape}{hint}, "
                             f"got {probs.shape}")
        target = _flat(probs.astype(logits.dtype, copy=False))
    else:
        raise TypeError(f"target: expected integer labels or float probabilities, "
                        f"got dtype {target_arr.dtype}")
    return _flat(logits), target, str(reduction), label_smoothing


def one_hot(labels, num_classes, dtype=np.float64):
    """(m, num_classes) matrix with a 1 at each label's column."""
    if isinstance(num_classes, (bool, np.bool_)) or not isinstance(num_classes, numbers.Integral):
        raise TypeError(f"num_classes: expected an int, got {type(num_classes).__name__}")
    if num_classes < 1:
        raise ValueError(f"num_classes: expected an int >= 1, got {num_classes}")
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels: expected integer labels, got dtype {labels.dtype}")
    if labels.ndim != 1:
        raise ValueError(f"labels: expected a 1-D array, got shape {labels.shape}")
    labels = _labels(labels, labels.shape[0], name="labels")
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise _kernels.LabelError(f"labels: label {labels[bad[0]]} at row {bad[0]} is outside [0, {num_classes})")
    encoded = np.zeros((labels.shape[0], int(num_classes)), dtype)
    encoded[np.arange(labels.shape[0]), labels] = 1
    return encoded
