"""fit(): mini-batch training with validation, history, callbacks and
checkpoints; build_mlp() and the .npz checkpoint format (never pickle).

Epoch e shuffles with a Generator seeded by (seed, e), so a run resumed from
a checkpoint at epoch e draws exactly the mini-batches the uninterrupted
run would have drawn, and ends with bitwise the same weights.
"""
import contextlib
import json
import math
import numbers
import os
import pathlib
import tempfile
from typing import NamedTuple

import numpy as np

from . import nn, optim
from ._npz import read_npz

__all__ = ["TrainingDiverged", "build_mlp", "build_optimizer", "fit", "evaluate", "History",
           "EarlyStopping", "Checkpoint", "LearningRateChange", "save_checkpoint",
           "load_checkpoint", "LoadedCheckpoint"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite, or (for softmax cross-entropy) over
    DIVERGED_FACTOR times a uniform guess's loss log(classes): training
    stopped rather than go on producing garbage."""


# A cross-entropy this many times log(classes) means logits hundreds apart
# in the wrong direction: no learning rate schedule brings that back.
DIVERGED_FACTOR = 100.0


# ---- models and optimizers from plain configs ------------------------------------

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


def build_mlp(n_features, n_classes, hidden=(128, 64), batch_norm=True, activation="relu",
              seed=0, momentum=0.1, dtype="float32"):
    """Dense -> [BatchNorm] -> activation, for each hidden width, then a
    Dense to the logits. Dense layers before a BatchNorm have no bias (beta
    replaces it). Parameters are float32 (as PyTorch's) unless
    dtype="float64". The config is kept on the model so checkpoints can
    rebuild it."""
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype: expected 'float32' or 'float64', got {dtype}")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation: expected one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    hidden = [int(h) for h in hidden]
    if any(h < 1 for h in hidden):
        raise ValueError(f"hidden: expected widths >= 1, got {hidden}")
    rng = np.random.default_rng(seed)
    init = "he" if activation == "relu" else "xavier"
    layers, width = [], n_features
    for h in hidden:
        layers.append(nn.Dense(width, h, bias=not batch_norm, init=init, rng=rng, dtype=dtype))
        if batch_norm:
            layers.append(nn.BatchNorm(h, momentum=momentum, dtype=dtype))
        layers.append(_ACTIVATIONS[activation]())
        width = h
    layers.append(nn.Dense(width, n_classes, init="xavier", rng=rng, dtype=dtype))
    model = nn.Sequential(*layers)
    model.config = dict(n_features=int(n_features), n_classes=int(n_classes), hidden=hidden,
                        batch_norm=bool(batch_norm), activation=activation, seed=int(seed),
                        momentum=float(momentum), dtype=dtype.name)
    return model


_OPTIMIZERS = {"sgd": optim.SGD, "rmsprop": optim.RMSprop, "adam": optim.Adam}


def build_optimizer(name, params, **hyperparameters):
    """optim.SGD / RMSprop / Adam by name ("sgd", "rmsprop", "adam")."""
    if name not in _OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {sorted(_OPTIMIZERS)}, got {name!r}")
    optimizer = _OPTIMIZERS[name](params, **hyperparameters)
    optimizer.config = dict(name=name, **hyperparameters)
    return optimizer


# ---- training ----------------------------------------------------------------------


class History(list):
    """One dict of logs per epoch; `history["val_accuracy"]` gives a column."""

    def __getitem__(self, key):
        if isinstance(key, str):
            return [logs.get(key) for logs in self]
        return super().__getitem__(key)


def _batches(order, batch_size):
    """Mini-batch index arrays; a last batch of one example joins the one
    before it (batch norm needs two values per feature)."""
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2] = np.concatenate(batches[-2:])
        batches.pop()
    return batches


def model_dtype(model):
    """The dtype of a model's parameters (the data is cast to it once)."""
    params = model.parameters()
    return params[0].data.dtype if params else np.dtype(np.float64)


def evaluate(model, X, y, loss=None, batch_size=4096):
    """(mean loss, accuracy) of the model in eval mode."""
    X, y = _examples(X, y, model_dtype(model), "X, y")
    loss = loss or nn.SoftmaxCrossEntropy()
    was_training = model.training
    model.eval()
    total, correct = 0.0, 0
    for start in range(0, len(X), batch_size):
        logits = model.forward(X[start:start + batch_size])
        yb = y[start:start + batch_size]
        total += loss(logits, yb) * len(yb)
        correct += int(np.sum(np.argmax(logits, axis=1) == yb))
    model.train(was_training)
    return total / len(X), correct / len(X)


def _examples(X, y, dtype, name):
    """X as a 2-D array of `dtype` and y as an array of as many labels, at
    least one example (the labels' values are the loss's to check)."""
    X, y = np.asarray(X, dtype=dtype), np.asarray(y)
    if X.ndim != 2 or y.shape != (len(X),):
        raise ValueError(f"{name}: expected X (m, n) and y (m,), got shapes {X.shape} and {y.shape}")
    if not len(X):
        raise ValueError(f"{name}: expected at least one example, got 0")
    return X, y


_blas = None  # threadpoolctl's view of the loaded BLAS libraries, found once


def blas_threads():
    """The threads NumPy's BLAS would use now (threadpoolctl limits included)."""
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController
        _blas = ThreadpoolController().select(user_api="blas")
    return max((lib.num_threads for lib in _blas.lib_controllers), default=1)


@contextlib.contextmanager
def _one_thread_pool():
    """Kernels on one thread while NumPy's BLAS runs several: a training
    step alternates matrix products and kernels, and two thread pools that
    spin-wait between calls starve each other on a small machine (an epoch
    of a 3x256 MLP at batch 128 on 2 cores took 460 ms instead of 16 ms).
    The matrix products are most of the work, so the BLAS keeps the cores;
    limit it (threadpoolctl) to give them to the kernels instead."""
    from . import _threads
    if _threads.get_num_threads() <= 1 or blas_threads() <= 1:
        yield
        return
    previous = _threads.requested_threads()
    _threads.set_num_threads(1)
    try:
        yield
    finally:
        _threads.set_num_threads(previous)


def fit(model, optimizer, X, y, *, epochs, batch_size=64, validation_data=None, seed=0,
        loss=None, schedule=None, callbacks=(), start_epoch=0, history=None, progress=False,
        shuffle=True):
    """Train for epochs [start_epoch, epochs). Returns the History.

    Each epoch logs loss/accuracy (over the epoch's mini-batches), val_loss/
    val_accuracy (eval mode, when validation_data is given) and lr. A
    callback's on_epoch_end(epoch, logs, model, optimizer) may return True
    to stop. Raises TrainingDiverged when the loss is not finite (or, for
    softmax cross-entropy, hopelessly large). shuffle=False takes the
    examples in order.
    """
    batch_size = nn._positive_int(batch_size, "batch_size")
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral):
        raise TypeError(f"epochs: expected an int, got {type(epochs).__name__}")
    # the data in the parameters' dtype, once (float64 data would otherwise
    # promote every float32 layer's output to float64)
    dtype = model_dtype(model)
    X, y = _examples(X, y, dtype, "X, y")
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise TypeError(f"validation_data: expected a pair (X_val, y_val), got {type(validation_data).__name__}")
        validation_data = _examples(*validation_data, dtype, "validation_data")
    loss = loss or nn.SoftmaxCrossEntropy()
    history = History() if history is None else history
    if schedule is not None:
        schedule.epoch = start_epoch
        optimizer.lr = schedule.lr_at(start_epoch)
    with _one_thread_pool():
        return _epochs(model, optimizer, X, y, epochs, batch_size, validation_data, seed, loss, schedule,
                       callbacks, start_epoch, history, progress, shuffle)


def _epochs(model, optimizer, X, y, epochs, batch_size, validation_data, seed, loss, schedule, callbacks,
            start_epoch, history, progress, shuffle):
    bar = _progress(range(start_epoch, epochs), progress)
    for epoch in bar:
        model.train()
        order = np.random.default_rng([seed, epoch]).permutation(len(X)) if shuffle else np.arange(len(X))
        total, correct = 0.0, 0
        for number, idx in enumerate(_batches(order, batch_size)):
            logits = model.forward(X[idx])
            value = loss(logits, y[idx])
            limit = _divergence_limit(loss, logits)
            if not math.isfinite(value) or value > limit:
                reached = f"became {value}" if not math.isfinite(value) else (
                    f"reached {value:.3g}, over {DIVERGED_FACTOR:g}x a uniform guess's {limit / DIVERGED_FACTOR:.3g}")
                raise TrainingDiverged(f"loss {reached} at epoch {epoch}, mini-batch {number} "
                                       f"(lr={optimizer.lr:g}): training stopped; try a lower "
                                       "learning rate")
            model.backward(loss.backward())
            optimizer.step()
            total += value * len(idx)
            correct += int(np.sum(np.argmax(logits, axis=1) == y[idx]))
        logs = {"epoch": epoch, "loss": total / len(X), "accuracy": correct / len(X),
                "lr": optimizer.lr}
        if validation_data is not None:
            logs["val_loss"], logs["val_accuracy"] = evaluate(model, *validation_data, loss=loss)
        if schedule is not None:
            schedule.step()
        history.append(logs)
        if progress:
            bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items() if k != "epoch"})
        stop = False
        for callback in callbacks:
            stop = bool(callback.on_epoch_end(epoch, logs, model, optimizer)) or stop
        if stop:
            break
    return history


def _divergence_limit(loss, logits):
    if isinstance(loss, nn.SoftmaxCrossEntropy) and logits.ndim == 2 and logits.shape[1] > 1:
        return DIVERGED_FACTOR * math.log(logits.shape[1])
    return math.inf


def _progress(iterable, enabled):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, desc="epochs", unit="epoch", dynamic_ncols=True)


# ---- callbacks ---------------------------------------------------------------------


class EarlyStopping:
    """Stop when `monitor` has not improved by min_delta for `patience`
    epochs; optionally restore the best weights."""

    def __init__(self, monitor="val_loss", patience=10, min_delta=0.0, restore_best=True):
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.restore_best = restore_best
        self.sign = 1.0 if "loss" in monitor else -1.0  # minimize losses, maximize the rest
        self.best, self.best_state, self.wait = math.inf, None, 0

    def on_epoch_end(self, epoch, logs, model, optimizer):
        value = logs.get(self.monitor)
        if value is None:
            raise ValueError(f"monitor: {self.monitor!r} is not logged (logged: {sorted(logs)})")
        if self.sign * value < self.best - self.min_delta:
            self.best, self.wait = self.sign * value, 0
            if self.restore_best:
                self.best_state = model.state_dict()
            return False
        self.wait += 1
        if self.wait >= self.patience:
            if self.best_state is not None:
                model.load_state_dict(self.best_state)
            return True
        return False


class Checkpoint:
    """Save model + optimizer to DIR/last.npz and DIR/epoch-NNNN.npz after
    every epoch (the panda's safety net).

    keep_last: keep only the newest N epoch files (None: all). monitor (a
    logged value such as "val_accuracy"; losses are minimized, the rest
    maximized): also keep DIR/best.npz, the best epoch so far, as
    PyTorch Lightning's ModelCheckpoint does."""

    LAST = "last.npz"  # the newest epoch's file, the one to resume from

    def __init__(self, directory, history=None, extra=None, keep_last=None, monitor=None):
        if keep_last is not None and (isinstance(keep_last, bool) or not isinstance(keep_last, int)
                                      or keep_last < 0):
            raise ValueError(f"keep_last: expected an int >= 0 or None, got {keep_last!r}")
        self.directory = pathlib.Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.history, self.extra, self.keep_last, self.monitor = history, extra or {}, keep_last, monitor
        self.sign = 1.0 if monitor and "loss" in monitor else -1.0
        self.best = math.inf

    def on_epoch_end(self, epoch, logs, model, optimizer):
        def save(path):
            save_checkpoint(path, model, optimizer, epoch=epoch + 1, history=self.history, extra=self.extra)
        if self.keep_last != 0:
            save(self.directory / f"epoch-{epoch + 1:04d}.npz")
        save(self.directory / self.LAST)
        if self.monitor is not None:
            value = logs.get(self.monitor)
            if value is None:
                raise ValueError(f"monitor: {self.monitor!r} is not logged (logged: {sorted(logs)})")
            if self.sign * value < self.best:
                self.best = self.sign * value
                save(self.directory / "best.npz")
        if self.keep_last:
            for old in sorted(self.directory.glob("epoch-*.npz"))[:-self.keep_last]:
                old.unlink()
        return False


class LearningRateChange:
    """Set the learning rate at given epochs: LearningRateChange({10: 1e-4})."""

    def __init__(self, at):
        self.at = dict(at)

    def on_epoch_end(self, epoch, logs, model, optimizer):
        if epoch + 1 in self.at:
            optimizer.lr = float(self.at[epoch + 1])
        return False


# ---- checkpoints -------------------------------------------------------------------


class LoadedCheckpoint(NamedTuple):
    model: nn.Sequential
    optimizer: optim.Optimizer
    epoch: int
    history: History
    extra: dict


def save_checkpoint(path, model, optimizer=None, *, epoch=0, history=None, extra=None):
    """Write model (and optimizer) state to an .npz, atomically: a crash
    mid-write leaves the previous file intact."""
    meta = {"format": "pybn-checkpoint-1", "model": getattr(model, "config", None),
            "optimizer": getattr(optimizer, "config", None), "epoch": int(epoch),
            "history": list(history or []), "extra": extra or {}}
    arrays = {"meta": np.array(json.dumps(meta))}
    arrays.update({f"model.{k}": v for k, v in model.state_dict().items()})
    if optimizer is not None:
        arrays.update({f"optim.{k}": v for k, v in optimizer.state_dict().items()})
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path, model=None, optimizer=None):
    """Rebuild (or fill `model` with) a saved model and its optimizer; an
    `optimizer` made by hand (over `model`'s parameters) is filled with the
    saved state instead of rebuilt, as PyTorch's optimizer.load_state_dict."""
    arrays = read_npz(path, "checkpoint")
    try:
        meta = json.loads(str(arrays.pop("meta")))
        if meta.get("format") != "pybn-checkpoint-1":
            raise ValueError("unknown format")
    except (KeyError, ValueError) as exc:
        raise ValueError(f"checkpoint: {path} is not a pybn checkpoint ({exc})") from exc
    if model is None:
        if not meta["model"]:
            raise ValueError("checkpoint: no model config stored; pass model= to load into")
        model = build_mlp(**{"dtype": "float64", **meta["model"]})  # files before float32 were float64
    model.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("model.")})
    saved = {k[6:]: v for k, v in arrays.items() if k.startswith("optim.")}
    if optimizer is not None:
        if not saved:
            raise ValueError(f"checkpoint: {path} holds no optimizer state to load into optimizer=")
        optimizer.load_state_dict(saved)
    elif meta["optimizer"]:
        config = dict(meta["optimizer"])
        optimizer = build_optimizer(config.pop("name"), model.parameters(), **config)
        optimizer.load_state_dict(saved)
    return LoadedCheckpoint(model, optimizer, meta["epoch"], History(meta["history"]), meta["extra"])
