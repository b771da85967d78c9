"""BNClassifier: a batch-normalized MLP as a scikit-learn classifier.

Parameter names follow sklearn.neural_network.MLPClassifier where they mean
the same thing; training is pybn.train.fit with pybn.nn layers. Usable in
Pipeline, cross_val_score and RandomizedSearchCV.
"""
import numbers

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, check_random_state, validate_data

from . import train as _train

__all__ = ["BNClassifier"]


class _StopOnPlateau:
    """MLPClassifier's stopping rule: training loss not better than
    best - tol for n_iter_no_change epochs."""

    def __init__(self, tol, n_iter_no_change):
        self.tol, self.n_iter_no_change = tol, n_iter_no_change
        self.best, self.count = np.inf, 0

    def on_epoch_end(self, epoch, logs, model, optimizer):
        if logs["loss"] > self.best - self.tol:
            self.count += 1
        else:
            self.count = 0
        self.best = min(self.best, logs["loss"])
        return self.count >= self.n_iter_no_change


class _Verbose:
    """MLPClassifier's verbose output: one line per epoch."""

    def on_epoch_end(self, epoch, logs, model, optimizer):
        extra = f", validation score = {logs['val_accuracy']:.8f}" if "val_accuracy" in logs else ""
        print(f"Iteration {epoch + 1}, loss = {logs['loss']:.8f}{extra}")
        return False


def _float64_twin(model):
    """The fitted model in float64, in eval mode, for predictions: float32
    BLAS products depend on a row's position in the batch (OpenBLAS's
    Haswell kernels on an AMD EPYC: 8e-6 apart), and predictions must not
    depend on the order of the samples (scikit-learn's estimator checks)."""
    if _train.model_dtype(model) == np.float64:
        return model
    twin = _train.build_mlp(**{**model.config, "dtype": "float64"})
    twin.load_state_dict(model.state_dict())
    return twin.eval()


class BNClassifier(ClassifierMixin, BaseEstimator):
    """Multi-layer perceptron with batch normalization after every hidden
    Dense layer, trained with mini-batch SGD (momentum), RMSprop or Adam.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default (128, 64)
    batch_norm : bool, default True
    activation : {"relu", "tanh"}, default "relu"
    solver : {"adam", "sgd", "rmsprop"}, default "adam"
    learning_rate_init : float, default 1e-3
    momentum : float, default 0.9 (sgd momentum; rmsprop's beta)
    beta_1, beta_2, epsilon : Adam's (and RMSprop's epsilon)
    batch_size : int, default 64
    max_iter : int, default 200 (epochs)
    alpha : float, default 1e-4 (L2 penalty)
    shuffle : bool, default True (shuffle the examples every epoch)
    dtype : {"float32", "float64"}, default "float32": the parameters' and
        training's precision (the data is cast to it); predictions are
        computed in float64 from the fitted parameters, so that they do not
        depend on the order of the samples
    tol, n_iter_no_change : stop when the training loss (or, with
        early_stopping, the validation accuracy) stops improving by tol
    early_stopping : bool, default False: hold out validation_fraction of
        the training data (stratified), stop when its accuracy stalls and
        keep the best epoch's weights, as MLPClassifier
    validation_fraction : float, default 0.1
    verbose : bool, default False (a line per epoch)
    warm_start : bool, default False: fit() continues from the previous
        fit's weights and optimizer state
    random_state : int, RandomState or None

    partial_fit(X, y, classes) trains one epoch (classes required on the
    first call), as MLPClassifier's.
    """

    def __init__(self, hidden_layer_sizes=(128, 64), batch_norm=True, activation="relu",
                 solver="adam", learning_rate_init=1e-3, momentum=0.9, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-8, batch_size=64, max_iter=200, alpha=1e-4, shuffle=True, tol=1e-4,
                 n_iter_no_change=10, early_stopping=False, validation_fraction=0.1, verbose=False,
                 warm_start=False, dtype="float32", random_state=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.batch_norm = batch_norm
        self.activation = activation
        self.solver = solver
        self.learning_rate_init = learning_rate_init
        self.momentum = momentum
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.alpha = alpha
        self.shuffle = shuffle
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.verbose = verbose
        self.warm_start = warm_start
        self.dtype = dtype
        self.random_state = random_state

    def _validate_params_values(self):
        def positive_int(name):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {value!r}")

        sizes = self.hidden_layer_sizes
        sizes = (sizes,) if isinstance(sizes, numbers.Integral) else tuple(sizes)
        if any(isinstance(h, bool) or not isinstance(h, numbers.Integral) or h < 1 for h in sizes):
            raise ValueError(f"hidden_layer_sizes: expected positive ints, got {self.hidden_layer_sizes!r}")
        for name in ("batch_size", "max_iter", "n_iter_no_change"):
            positive_int(name)
        if self.solver not in ("adam", "sgd", "rmsprop"):
            raise ValueError(f"solver: expected 'adam', 'sgd' or 'rmsprop', got {self.solver!r}")
        if self.activation not in ("relu", "tanh"):
            raise ValueError(f"activation: expected 'relu' or 'tanh', got {self.activation!r}")
        if not self.learning_rate_init > 0:
            raise ValueError(f"learning_rate_init: expected a number > 0, got {self.learning_rate_init!r}")
        if not self.alpha >= 0:
            raise ValueError(f"alpha: expected a number >= 0, got {self.alpha!r}")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction: expected a number in (0, 1), got {self.validation_fraction!r}")
        if self.dtype not in ("float32", "float64", np.float32, np.float64):
            raise ValueError(f"dtype: expected 'float32' or 'float64', got {self.dtype!r}")
        for name in ("shuffle", "early_stopping", "verbose", "warm_start", "batch_norm"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name}: expected a bool, got {getattr(self, name)!r}")
        return sizes

    def _optimizer(self, params):
        common = dict(lr=float(self.learning_rate_init), weight_decay=float(self.alpha))
        if self.solver == "sgd":
            return _train.build_optimizer("sgd", params, momentum=self.momentum, **common)
        if self.solver == "rmsprop":
            return _train.build_optimizer("rmsprop", params, beta=self.momentum, eps=self.epsilon,
                                          **common)
        return _train.build_optimizer("adam", params, beta1=self.beta_1, beta2=self.beta_2,
                                      eps=self.epsilon, **common)

    def _start(self, X, classes, sizes):
        """A fresh model, optimizer and training seed for these classes."""
        self._label_encoder = LabelEncoder().fit(classes)
        self.classes_ = self._label_encoder.classes_
        self._seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        self.model_ = _train.build_mlp(X.shape[1], len(self.classes_), hidden=sizes,
                                       batch_norm=self.batch_norm, activation=self.activation,
                                       seed=self._seed, dtype=np.dtype(self.dtype).name)
        self._optimizer_ = self._optimizer(self.model_.parameters())
        self.history_ = _train.History()
        self.n_iter_ = 0

    def _encode(self, y):
        unknown = np.setdiff1d(np.unique(y), self.classes_)
        if unknown.size:
            raise ValueError(f"y: labels {unknown.tolist()} are not among the classes {self.classes_.tolist()}")
        return self._label_encoder.transform(y).astype(np.int64)

    def _epochs(self, X, y, epochs, callbacks, validation_data=None):
        self.model_.train()
        _train.fit(self.model_, self._optimizer_, X, y, epochs=self.n_iter_ + epochs,
                   start_epoch=self.n_iter_, batch_size=self.batch_size, seed=self._seed,
                   history=self.history_, shuffle=self.shuffle, validation_data=validation_data,
                   callbacks=callbacks + ([_Verbose()] if self.verbose else []))
        self.n_iter_ = len(self.history_)
        self.loss_ = self.history_[-1]["loss"]
        self.loss_curve_ = self.history_["loss"]
        self.model_.eval()
        self._predictor_ = _float64_twin(self.model_)

    def fit(self, X, y):
        sizes = self._validate_params_values()
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        if X.shape[0] < 2 and self.batch_norm:
            raise ValueError(f"X: got {X.shape[0]} sample; batch normalization needs at least 2 samples")
        if not (self.warm_start and hasattr(self, "model_")):
            self._start(X, np.unique(y), sizes)
        y_encoded = self._encode(y)
        if not self.early_stopping:
            self.best_validation_score_ = self.validation_scores_ = None
            self._epochs(X, y_encoded, self.max_iter, [_StopOnPlateau(self.tol, self.n_iter_no_change)])
            return self
        from sklearn.model_selection import train_test_split
        stratify = y_encoded if np.bincount(y_encoded).min() >= 2 else None
        X_fit, X_val, y_fit, y_val = train_test_split(X, y_encoded, test_size=self.validation_fraction,
                                                      random_state=self._seed, stratify=stratify)
        stopper = _train.EarlyStopping(monitor="val_accuracy", patience=self.n_iter_no_change,
                                       min_delta=self.tol, restore_best=True)
        self._epochs(X_fit, y_fit, self.max_iter, [stopper], validation_data=(X_val, y_val))
        self.validation_scores_ = self.history_["val_accuracy"]
        self.best_validation_score_ = max(self.validation_scores_)
        return self

    def partial_fit(self, X, y, classes=None):
        """One epoch over (X, y); `classes` (every label fit will ever see)
        is required on the first call."""
        sizes = self._validate_params_values()
        first = not hasattr(self, "model_")
        X, y = validate_data(self, X, y, dtype=np.float64, reset=first)
        check_classification_targets(y)
        if first:
            if classes is None:
                raise ValueError("classes: required on the first call to partial_fit "
                                 "(every label the model will see)")
            self._start(X, np.unique(classes), sizes)
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"classes: expected {self.classes_.tolist()} as on the first call, "
                             f"got {np.unique(classes).tolist()}")
        self._epochs(X, self._encode(y), 1, [])
        return self

    def _logits(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return self._predictor_.forward(X)

    def predict_proba(self, X):
        from .functional import softmax
        return softmax(self._logits(X).astype(np.float64), axis=1)  # probabilities as scikit-learn's

    def predict_log_proba(self, X):
        from .functional import log_softmax
        return log_softmax(self._logits(X).astype(np.float64), axis=1)

    def predict(self, X):
        logits = self._logits(X)
        return self.classes_[np.argmax(logits, axis=1)]
