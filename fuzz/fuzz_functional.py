"""Coverage-guided fuzzing (atheris) of pybn's public functional API.

Each input is decoded into an operation, an array (dtype, shape, raw bytes:
any bit pattern, NaN and inf included), an axis and the scalar arguments.
A call may return or raise ValueError / TypeError; any other exception, and
of course a crash, is a finding.

    python fuzz/fuzz_functional.py -runs=20000        # a fixed number of inputs
    python fuzz/fuzz_functional.py -max_total_time=3600 corpus/   # a long run
"""
import sys

import atheris

import numpy as np

import pybn

atheris.instrument_all()  # coverage of every loaded Python function, pybn's included

OPS = ["softmax", "log_softmax", "softmax_backward", "log_softmax_backward", "batch_norm_forward",
       "batch_norm_backward", "softmax_cross_entropy", "one_hot"]
DTYPES = [np.float32, np.float64, np.int64, np.float16, np.bool_, np.complex64]


def _array(fdp, max_elements=512):
    dtype = np.dtype(DTYPES[fdp.ConsumeIntInRange(0, len(DTYPES) - 1)])
    ndim = fdp.ConsumeIntInRange(0, 4)
    shape = tuple(fdp.ConsumeIntInRange(0, 9) for _ in range(ndim))
    count = int(np.prod(shape)) if shape else 1
    if count > max_elements:
        shape, count = (count % max_elements,), count % max_elements
    raw = fdp.ConsumeBytes(count * dtype.itemsize)
    raw = raw + bytes(count * dtype.itemsize - len(raw))
    a = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    if fdp.ConsumeBool() and a.ndim >= 2:
        a = a.T  # non-contiguous
    return a


def test_one_input(data):
    fdp = atheris.FuzzedDataProvider(data)
    op = OPS[fdp.ConsumeIntInRange(0, len(OPS) - 1)]
    pybn.set_num_threads(fdp.ConsumeIntInRange(1, 3))
    a = _array(fdp)
    axis = fdp.ConsumeIntInRange(-5, 5)
    try:
        if op in ("softmax", "log_softmax"):
            getattr(pybn, op)(a, axis=axis)
        elif op in ("softmax_backward", "log_softmax_backward"):
            getattr(pybn, op)(_array(fdp), a, axis=axis)
        elif op == "batch_norm_forward":
            channels = a.shape[axis] if a.ndim and -a.ndim <= axis < a.ndim else 1
            gamma = _array(fdp) if fdp.ConsumeBool() else None
            rm = np.zeros(channels, a.dtype) if a.dtype.kind == "f" else None
            pybn.batch_norm_forward(a, gamma, None, running_mean=rm,
                                    running_var=None if rm is None else np.ones_like(rm),
                                    training=fdp.ConsumeBool(), momentum=fdp.ConsumeFloat(),
                                    eps=fdp.ConsumeFloat(), axis=axis)
        elif op == "batch_norm_backward":
            pybn.batch_norm_backward(_array(fdp), a, None, _array(fdp), _array(fdp), axis=axis,
                                     training=fdp.ConsumeBool())
        elif op == "softmax_cross_entropy":
            target = _array(fdp) if fdp.ConsumeBool() else np.array(
                [fdp.ConsumeIntInRange(-2, 12) for _ in range(a.shape[0] if a.ndim else 1)])
            pybn.softmax_cross_entropy(a, target, reduction=["mean", "sum", "none", "x"][
                fdp.ConsumeIntInRange(0, 3)], label_smoothing=fdp.ConsumeFloat())
        else:
            pybn.one_hot(_array(fdp), fdp.ConsumeIntInRange(-1, 12))
    except (ValueError, TypeError):
        pass


def main():
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
