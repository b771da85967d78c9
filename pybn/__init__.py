"""pybn: fast, trustworthy CPU kernels for batch normalization and softmax,
under a NumPy training and hyperparameter-search API."""
from ._threads import get_num_threads, set_num_threads
from .functional import (
    BatchNormOutput,
    batch_norm_backward,
    batch_norm_forward,
    log_softmax,
    log_softmax_backward,
    one_hot,
    softmax,
    softmax_backward,
    softmax_cross_entropy,
)

from . import datasets, nn, optim, train
from .nn import manual_seed

__version__ = "0.1.0"


def __getattr__(name):
    # Heavier parts load on first use: BNClassifier imports scikit-learn.
    import importlib
    if name == "BNClassifier":
        return importlib.import_module(".sklearn", __name__).BNClassifier
    if name in ("tune", "sklearn", "plot", "bench", "torch"):  # pybn.torch needs PyTorch
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'pybn' has no attribute {name!r}")


__all__ = [
    "datasets",
    "nn",
    "optim",
    "train",
    "tune",
    "BNClassifier",
    "BatchNormOutput",
    "batch_norm_backward",
    "batch_norm_forward",
    "get_num_threads",
    "log_softmax",
    "log_softmax_backward",
    "manual_seed",
    "one_hot",
    "set_num_threads",
    "softmax",
    "softmax_backward",
    "softmax_cross_entropy",
]
