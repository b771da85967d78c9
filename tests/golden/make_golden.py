"""Regenerate the PyTorch golden values the tests compare against.

Run by hand with PyTorch installed (2.13.0 CPU made the committed files):
    python tests/golden/make_golden.py
It writes batchnorm_torch.npz and softmax_torch.npz beside this file, so CI
checks PyTorch compatibility without installing PyTorch.
"""
import pathlib

import numpy as np
import torch
import torch.nn.functional as F

HERE = pathlib.Path(__file__).parent

# (shape, dtype, training, affine, axis, mean offset, momentum, eps)
BN_CASES = [
    ((8, 5), np.float32, True, True, 1, 0.0, 0.1, 1e-5),
    ((4, 3, 5, 6), np.float64, True, True, 1, 2.0, 0.3, 1e-5),
    ((6, 4, 3), np.float32, False, True, 1, 0.0, 0.1, 1e-3),
    ((3, 4, 2, 2), np.float64, True, False, 1, -1.0, 0.1, 1e-5),
    ((64, 3), np.float64, True, True, 1, 1e4, 0.1, 1e-5),
    ((2, 3, 4, 5), np.float32, True, True, -1, 0.5, 0.1, 1e-5),
]


def batchnorm_cases(rng):
    out = {}
    for i, (shape, dtype, training, affine, axis, offset, momentum, eps) in enumerate(BN_CASES):
        x = (rng.standard_normal(shape) * 2 + offset).astype(dtype)
        channels = shape[axis]
        gamma = rng.standard_normal(channels).astype(dtype) if affine else None
        beta = rng.standard_normal(channels).astype(dtype) if affine else None
        rm0 = rng.standard_normal(channels).astype(dtype)
        rv0 = rng.uniform(0.5, 2.0, channels).astype(dtype)
        dy = rng.standard_normal(shape).astype(dtype)

        xt = torch.tensor(np.moveaxis(x, axis, 1), requires_grad=True)
        gt = torch.tensor(gamma, requires_grad=True) if affine else None
        bt = torch.tensor(beta, requires_grad=True) if affine else None
        rm, rv = torch.tensor(rm0), torch.tensor(rv0)
        y = F.batch_norm(xt, rm, rv, gt, bt, training=training, momentum=momentum, eps=eps)
        y.backward(torch.tensor(np.moveaxis(dy, axis, 1)))

        p = f"bn{i}."
        out.update({p + "x": x, p + "dy": dy, p + "running_mean0": rm0, p + "running_var0": rv0,
                    p + "training": np.array(training), p + "axis": np.array(axis),
                    p + "momentum": np.array(momentum), p + "eps": np.array(eps),
                    p + "y": np.moveaxis(y.detach().numpy(), 1, axis),
                    p + "running_mean": rm.numpy(), p + "running_var": rv.numpy(),
                    p + "dx": np.moveaxis(xt.grad.numpy(), 1, axis)})
        if affine:
            out.update({p + "gamma": gamma, p + "beta": beta,
                        p + "dgamma": gt.grad.numpy(), p + "dbeta": bt.grad.numpy()})
    out["n_cases"] = np.array(len(BN_CASES))
    return out


def extreme_rows(dtype):
    big = np.finfo(dtype).max
    inf, nan = np.inf, np.nan
    return np.array([
        [0.0, 1.0, 2.0, 3.0],
        [1e4, -1e4, 0.0, 1e4],
        [big, -big, 0.0, 1.0],
        [-big, -big, -big, -big],
        [-inf, 0.0, 1.0, -inf],
        [-inf, -inf, -inf, -inf],
        [inf, 0.0, 1.0, 2.0],
        [nan, 0.0, 1.0, 2.0],
        [-1e4, -1e4 + 1, -1e4 + 2, -1e4],
    ], dtype)


def softmax_cases(rng):
    out = {}
    for name, dtype in (("f32", np.float32), ("f64", np.float64)):
        z = extreme_rows(dtype)
        zt = torch.tensor(z)
        out[f"extreme.{name}.z"] = z
        out[f"extreme.{name}.softmax"] = torch.softmax(zt, -1).numpy()
        out[f"extreme.{name}.log_softmax"] = torch.log_softmax(zt, -1).numpy()

        for axis, shape in ((-1, (5, 7)), (1, (3, 6, 4)), (0, (10, 3))):
            z = (rng.standard_normal(shape) * 3).astype(dtype)
            g = rng.standard_normal(shape).astype(dtype)
            p = f"axis{axis}.{name}."
            for op in ("softmax", "log_softmax"):
                zt = torch.tensor(z, requires_grad=True)
                y = getattr(torch, op)(zt, axis)
                y.backward(torch.tensor(g))
                out.update({p + "z": z, p + "g": g, p + op: y.detach().numpy(),
                            p + op + "_grad": zt.grad.numpy()})

        logits = (rng.standard_normal((6, 5)) * 2).astype(dtype)
        logits[1, 3] = -np.inf  # a -inf logit off the label: finite loss unless smoothed
        labels = np.array([0, 1, 4, 2, 2, 3])
        probs = rng.dirichlet(np.ones(5), size=6).astype(dtype)
        for reduction in ("mean", "sum", "none"):
            for smoothing in (0.0, 0.2):
                for tname, target in (("labels", labels), ("probs", probs)):
                    zt = torch.tensor(logits, requires_grad=True)
                    loss = F.cross_entropy(zt, torch.tensor(target), reduction=reduction,
                                           label_smoothing=smoothing)
                    loss.backward(torch.ones_like(loss))
                    p = f"ce.{name}.{reduction}.{smoothing}.{tname}."
                    out[p + "loss"] = loss.detach().numpy()
                    out[p + "grad"] = zt.grad.numpy()
        out[f"ce.{name}.logits"] = logits
        out[f"ce.{name}.labels"] = labels
        out[f"ce.{name}.probs"] = probs
    return out


def main():
    rng = np.random.default_rng(20261122)
    np.savez(HERE / "batchnorm_torch.npz", **batchnorm_cases(rng))
    np.savez(HERE / "softmax_torch.npz", **softmax_cases(rng))
    print("torch", torch.__version__, "->", HERE)


if __name__ == "__main__":
    main()
