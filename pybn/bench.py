"""`pybn bench`: each kernel timed beside the NumPy reference and PyTorch CPU
(when installed) on the same shapes, in the same process, with the machine's
memory bandwidth measured by the same command (a STREAM-style copy), so the
table shows speedups, effective GB/s and the fraction of the roofline.

The cases (kernels, shapes, inputs, minimal bytes moved, implementations)
are defined here once; bench/ parametrizes its pytest-benchmark suites over
them. Nothing here asserts a speed.
"""
import math
import threading
import time
from dataclasses import dataclass

import numpy as np

from . import functional as F
from . import reference as R
from ._threads import get_num_threads, set_num_threads

__all__ = ["KERNELS", "SHAPES", "Case", "make_case", "measure_copy_bandwidth", "cpu_model", "time_call",
           "time_interleaved", "run", "report"]

SMALL = [(32, 64), (64, 128), (32, 10)]
CACHE_RESIDENT = [(256, 1024), (256, 10)]
BN_MEMORY_BOUND = [(1024, 4096), (8192, 256), (32, 64, 56, 56), (64, 256, 14, 14), (8, 3, 224, 224)]
SOFTMAX_MEMORY_BOUND = [(1024, 4096), (8192, 256), (4096, 1000), (64, 50257), (512, 32000)]

SHAPES = {
    "bn_train_forward": SMALL + CACHE_RESIDENT + BN_MEMORY_BOUND,
    "bn_eval_forward": SMALL + CACHE_RESIDENT + BN_MEMORY_BOUND,
    "bn_backward": SMALL + CACHE_RESIDENT + BN_MEMORY_BOUND,
    "softmax": SMALL + CACHE_RESIDENT + SOFTMAX_MEMORY_BOUND,
    "log_softmax": SMALL + CACHE_RESIDENT + SOFTMAX_MEMORY_BOUND,
    "cross_entropy": SMALL + CACHE_RESIDENT + SOFTMAX_MEMORY_BOUND,
}
KERNELS = list(SHAPES)

# Arrays each kernel must at least read and write once, in units of x.
_TRAFFIC = {"bn_train_forward": 2, "bn_eval_forward": 2, "bn_backward": 3, "softmax": 2,
            "log_softmax": 2, "cross_entropy": 2}


@dataclass
class Case:
    """One kernel on one shape: the callables of each implementation."""
    kernel: str
    shape: tuple
    dtype: np.dtype
    min_bytes: int
    impls: dict  # name -> zero-argument callable


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def make_case(kernel, shape, dtype=np.float32, seed=0, with_torch=True):
    """Inputs for `kernel` at `shape` and a callable per implementation:
    "pybn" (fresh output), "pybn out=" (preallocated output), "reference",
    and "torch" when PyTorch is importable."""
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(dtype)
    out = np.empty_like(x)
    impls = {}
    torch = _torch() if with_torch else None
    if kernel.startswith("bn"):
        channels = shape[1]
        gamma = rng.uniform(0.5, 2, channels).astype(dtype)
        beta = rng.standard_normal(channels).astype(dtype)
        rm, rv = np.zeros(channels, dtype), np.ones(channels, dtype)
        training = kernel != "bn_eval_forward"
        if kernel == "bn_backward":
            dy = rng.standard_normal(shape).astype(dtype)
            _, mean, invstd = F.batch_norm_forward(x, gamma, beta)
            impls["pybn"] = lambda: F.batch_norm_backward(dy, x, gamma, mean, invstd)
            impls["pybn out="] = lambda: F.batch_norm_backward(dy, x, gamma, mean, invstd, out=out)
            impls["reference"] = lambda: R.batch_norm_backward(dy, x, gamma, mean, invstd)
        else:
            kw = dict(running_mean=rm, running_var=rv, training=training)
            impls["pybn"] = lambda: F.batch_norm_forward(x, gamma, beta, **kw)
            impls["pybn out="] = lambda: F.batch_norm_forward(x, gamma, beta, out=out, **kw)
            impls["reference"] = lambda: R.batch_norm_forward(x, gamma, beta, **kw)
        if torch is not None:
            impls["torch"] = _torch_batch_norm(torch, kernel, x, gamma, beta, rm, rv)
    else:
        if kernel == "cross_entropy":
            labels = rng.integers(0, shape[1], shape[0])
            impls["pybn"] = lambda: F.softmax_cross_entropy(x, labels)
            impls["pybn out="] = lambda: F.softmax_cross_entropy(x, labels, out=out)
            impls["reference"] = lambda: R.softmax_cross_entropy(x, labels)
        else:
            fn, ref = (F.softmax, R.softmax) if kernel == "softmax" else (F.log_softmax, R.log_softmax)
            impls["pybn"] = lambda: fn(x)
            impls["pybn out="] = lambda: fn(x, out=out)
            impls["reference"] = lambda: ref(x)
        if torch is not None:
            impls["torch"] = _torch_softmax(torch, kernel, x, rng)
    min_bytes = _TRAFFIC[kernel] * x.nbytes
    return Case(kernel, tuple(shape), dtype, min_bytes, impls)


def _torch_batch_norm(torch, kernel, x, gamma, beta, rm, rv):
    xt, gt, bt = torch.from_numpy(x), torch.from_numpy(gamma), torch.from_numpy(beta)
    rmt, rvt = torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy())
    if kernel == "bn_backward":
        _, save_mean, save_invstd = torch.native_batch_norm(xt, gt, bt, rmt, rvt, True, 0.1, 1e-5)
        dyt = torch.randn_like(xt)
        return lambda: torch.ops.aten.native_batch_norm_backward(
            dyt, xt, gt, rmt, rvt, save_mean, save_invstd, True, 1e-5, [True, True, True])
    training = kernel == "bn_train_forward"
    return lambda: torch.nn.functional.batch_norm(xt, rmt, rvt, gt, bt, training=training)


def _torch_softmax(torch, kernel, x, rng):
    zt = torch.from_numpy(x)
    if kernel == "softmax":
        return lambda: torch.softmax(zt, -1)
    if kernel == "log_softmax":
        return lambda: torch.log_softmax(zt, -1)
    yt = torch.from_numpy(rng.integers(0, x.shape[1], x.shape[0]))
    z_grad = zt.clone().requires_grad_()

    def forward_backward():
        loss = torch.nn.functional.cross_entropy(z_grad, yt)
        return torch.autograd.grad(loss, z_grad)
    return forward_backward


def time_call(fn, min_time=0.05, max_repeat=200, min_repeat=3):
    """Best wall time of fn() in seconds: the minimum filters out the noise
    of a shared machine. Repeats until min_time has passed."""
    fn()  # warm up: first-touch pages, lazy initialisation
    best, total, n = math.inf, 0.0, 0
    while n < min_repeat or (total < min_time and n < max_repeat):
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        best, total, n = min(best, elapsed), total + elapsed, n + 1
    return best


def time_interleaved(impls, rounds, min_time=0.01, max_repeat=25):
    """Best wall time in seconds of each implementation, measured in rounds
    that take every implementation in turn: a shared machine's slow spells
    then fall on all of them rather than on whichever ran at the time. The
    NumPy reference, slow and not the comparison that matters, gets one
    short round."""
    best = {name: math.inf for name in impls}
    for round_ in range(rounds):
        for name, fn in impls.items():
            if name == "reference":
                if round_ == 0:
                    best[name] = time_call(fn, min_time=0.02, max_repeat=5)
                continue
            best[name] = min(best[name], time_call(fn, min_time=min_time, max_repeat=max_repeat))
    return best


def cpu_model():
    """The processor's model name ("AMD EPYC", "Intel(R) Xeon(R) ..."), from
    /proc/cpuinfo on Linux, else what the platform module says: the shared
    VMs here change kind between sessions, and a ratio means something only
    beside the machine it was measured on."""
    import platform
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def measure_copy_bandwidth(n_threads=None, nbytes=256 * 2**20):
    """STREAM-style copy bandwidth in bytes/s (read + write counted, as
    STREAM does), each thread copying its slice of a large array."""
    n_threads = n_threads or get_num_threads()
    src = np.ones(nbytes // 8)
    dst = np.empty_like(src)
    chunks = np.array_split(np.arange(src.size), n_threads)
    bounds = [(c[0], c[-1] + 1) for c in chunks if c.size]

    def copy():
        workers = [threading.Thread(target=np.copyto, args=(dst[a:b], src[a:b])) for a, b in bounds]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    return 2 * src.nbytes / time_call(copy, min_time=0.5, max_repeat=10)


def format_table(rows, bandwidth, threads, have_torch):
    header = ["kernel", "shape", "pybn ms", "out= ms"] + (["torch ms"] if have_torch else []) + \
             ["ref ms"] + (["vs torch"] if have_torch else []) + ["vs ref", "GB/s", "roofline"]
    lines = []
    for r in rows:
        cells = [r["kernel"], "x".join(map(str, r["shape"])), f"{r['pybn'] * 1e3:.4f}",
                 f"{r['pybn out='] * 1e3:.4f}" if r.get("pybn out=") else "-"]
        if have_torch:
            cells.append(f"{r['torch'] * 1e3:.4f}")
        cells.append(f"{r['reference'] * 1e3:.3f}")
        if have_torch:
            cells.append(f"{r['torch'] / r['pybn']:.2f}x")
        best = min(r["pybn"], r.get("pybn out=") or math.inf)
        gbs = r["min_bytes"] / best / 1e9
        cells += [f"{r['reference'] / r['pybn']:.1f}x", f"{gbs:.1f}", f"{gbs * 1e9 / bandwidth:.0%}"]
        lines.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(header)]
    out = [f"{cpu_model()}, threads {threads}, float32, copy bandwidth {bandwidth / 1e9:.1f} GB/s; "
           "times are the best of repeated runs; GB/s and roofline use the minimal bytes (each input read once, "
           "each output written once) of the faster pybn column"]
    out.append("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    out += ["  ".join(c.rjust(w) for c, w in zip(cells, widths)) for cells in lines]
    return "\n".join(out)


def report(rows, bandwidth, threads):
    """The table of run()'s rows, then the geometric-mean speedups over
    PyTorch (when every row has it) and over the NumPy reference."""
    have_torch = all("torch" in r for r in rows)
    lines = [format_table(rows, bandwidth, threads, have_torch)]
    if have_torch:
        lines.append(f"geometric-mean speedup over PyTorch: {geomean([r['torch'] / r['pybn'] for r in rows]):.2f}x")
    lines.append(f"geometric-mean speedup over the NumPy reference: "
                 f"{geomean([r['reference'] / r['pybn'] for r in rows]):.1f}x")
    return "\n".join(lines)


def geomean(values):
    values = [v for v in values if v > 0]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else float("nan")


def run(kernels=None, threads=None, quick=True, with_torch=True, progress=True):
    """Measure every case; returns (rows, bandwidth, threads)."""
    threads = threads or get_num_threads()
    previous = get_num_threads()
    set_num_threads(threads)
    torch = _torch() if with_torch else None
    if torch is not None:
        torch.set_num_threads(threads)
    try:
        bandwidth = measure_copy_bandwidth(threads)
        cases = [(k, s) for k in (kernels or KERNELS) for s in SHAPES[k]]
        iterator = cases
        if progress:
            from tqdm.auto import tqdm
            iterator = tqdm(cases, desc="bench", unit="case", leave=False)
        rows = []
        for kernel, shape in iterator:
            case = make_case(kernel, shape, with_torch=torch is not None)
            row = {"kernel": kernel, "shape": shape, "min_bytes": case.min_bytes}
            row.update(time_interleaved(case.impls, rounds=3 if quick else 10))
            rows.append(row)
    finally:
        set_num_threads(previous)
    return rows, bandwidth, threads
