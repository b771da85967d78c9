"""The objective `pybn tune` optimizes: validation accuracy of a BN-MLP
trained on digits (or a user's .npz), and its default search space, in the
order of importance the practice gives: learning rate first; momentum beta,
mini-batch size and hidden units next; layers and learning-rate decay after.

MLPObjective is a plain picklable object, so process pools and Dask workers
can run it; each process loads and splits the data once.
"""
import functools

import numpy as np

from .. import _threads, datasets, optim
from .. import train as T
from .execution import TrialDiverged, TrialPruned
from .spaces import Choice, IntUniform, LogUniform, OneMinusLogUniform

__all__ = ["MLPObjective", "default_space", "learning_rate_space"]


def default_space():
    return {
        "learning_rate": LogUniform(1e-4, 1e-1),
        "beta1": OneMinusLogUniform(0.8, 0.999),
        "batch_size": Choice([16, 32, 64, 128, 256]),
        "hidden_units": IntUniform(16, 256, log=True),
        "layers": IntUniform(1, 3),
        "lr_decay": LogUniform(1e-3, 1.0),
    }


def learning_rate_space(low=1e-4, high=10.0):
    """Only the learning rate, over a wide range: for --compare-batchnorm."""
    return {"learning_rate": LogUniform(low, high)}


@functools.lru_cache(maxsize=4)
def _arrays(path):
    """(X, y) of the data file (digits when None), read once per process."""
    return datasets.load_npz(path) if path else datasets.load_digits()


@functools.lru_cache(maxsize=4)
def _data(path, split_seed):
    X, y = _arrays(path)
    return datasets.split_standardize(X, y, seed=split_seed), int(y.max()) + 1


class MLPObjective:
    """objective(params, trial) -> best validation accuracy over the epochs.

    Missing parameters take these defaults: beta1 0.9 (Adam's beta1, or SGD's
    momentum with optimizer="sgd"), batch 64, one hidden layer of 64 units,
    no decay. Reports the validation accuracy
    every epoch (so hopeless trials can be pruned)."""

    def __init__(self, data=None, epochs=20, batch_norm=True, split_seed=0, optimizer="adam",
                 fixed=None, dtype="float32"):
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer: expected 'adam' or 'sgd', got {optimizer!r}")
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
        self.dtype = dtype
        self.data, self.epochs, self.batch_norm, self.split_seed = data, epochs, batch_norm, split_seed
        self.optimizer = optimizer
        self.fixed = dict(fixed or {})  # parameters held fixed, under the sampled ones

    def __call__(self, params, trial):
        reporter = _Reporter(trial, self.epochs)
        previous = _threads.requested_threads()
        _threads.set_num_threads(getattr(trial, "threads", None) or previous)  # this worker's share
        try:
            self.train(params, trial.seed, callbacks=[reporter])
        except T.TrainingDiverged as exc:
            raise TrialDiverged(str(exc)) from None
        finally:
            _threads.set_num_threads(previous)
        return max(reporter.scores)

    def train(self, params, seed, callbacks=()):
        """Train the configuration `params` with training seed `seed`:
        (model, optimizer, history, split), the data split as the trials see
        it (so split.X_test, split.y_test are the held-out test examples)."""
        split, n_classes = _data(self.data, self.split_seed)
        p = {"beta1": 0.9, "batch_size": 64, "hidden_units": 64, "layers": 1, "lr_decay": 0.0,
             **self.fixed, **params}
        model = T.build_mlp(split.X_train.shape[1], n_classes, hidden=[int(p["hidden_units"])] * int(p["layers"]),
                            batch_norm=self.batch_norm, seed=seed, dtype=self.dtype)
        if self.optimizer == "adam":
            optimizer = T.build_optimizer("adam", model.parameters(), lr=float(p["learning_rate"]),
                                          beta1=float(p["beta1"]))
        else:  # SGD with momentum: beta1 is the momentum
            optimizer = T.build_optimizer("sgd", model.parameters(), lr=float(p["learning_rate"]),
                                          momentum=float(p["beta1"]))
        schedule = optim.InverseTimeDecay(optimizer, float(p["lr_decay"])) if p["lr_decay"] else None
        with np.errstate(over="ignore", invalid="ignore"):  # divergence is detected and recorded
            history = T.fit(model, optimizer, split.X_train, split.y_train, epochs=self.epochs,
                            batch_size=int(p["batch_size"]), validation_data=(split.X_val, split.y_val),
                            seed=seed, schedule=schedule, callbacks=list(callbacks))
        return model, optimizer, history, split

    def settings(self):
        """What defines this objective, for a study's identity: the data's
        content (not its path) and every training setting."""
        return {"data": data_fingerprint(self.data), "epochs": self.epochs, "batch_norm": self.batch_norm,
                "split_seed": self.split_seed, "optimizer": self.optimizer, "fixed": self.fixed,
                "dtype": self.dtype}


def data_fingerprint(path):
    """'NAME sha256:HEX' of the data a trial trains on (digits when None)."""
    import hashlib
    import os
    X, y = _arrays(path)
    digest = hashlib.sha256()
    for a in (X, y):
        digest.update(str((a.dtype.str, a.shape)).encode())
        digest.update(np.ascontiguousarray(a).tobytes())
    return f"{os.path.basename(path) if path else 'digits'} sha256:{digest.hexdigest()[:16]}"


class _Reporter:
    """Reports each epoch's validation accuracy to the trial. A pruner's
    verdict at the last epoch is not followed: the trial has run its whole
    budget, so it is complete (a rung or a percentile at that epoch would
    otherwise mark a fully trained trial pruned, its last score in place of
    its best)."""

    def __init__(self, trial, epochs):
        self.trial, self.epochs, self.scores = trial, epochs, []

    def on_epoch_end(self, epoch, logs, model, optimizer):
        self.scores.append(logs["val_accuracy"])
        try:
            self.trial.report(epoch, logs["val_accuracy"])
        except TrialPruned:
            if epoch + 1 < self.epochs:
                raise
        return False
