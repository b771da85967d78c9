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

__version__ = "0.1.0"

__all__ = [
    "BatchNormOutput",
    "batch_norm_backward",
    "batch_norm_forward",
    "get_num_threads",
    "log_softmax",
    "log_softmax_backward",
    "one_hot",
    "set_num_threads",
    "softmax",
    "softmax_backward",
    "softmax_cross_entropy",
]
