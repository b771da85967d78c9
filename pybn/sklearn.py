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
    tol, n_iter_no_change : stop when the training loss stalls
    random_state : int, RandomState or None
    """

    def __init__(self, hidden_layer_sizes=(128, 64), batch_norm=True, activation="relu",
                 solver="adam", learning_rate_init=1e-3, momentum=0.9, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-8, batch_size=64, max_iter=200, alpha=1e-4, tol=1e-4,
                 n_iter_no_change=10, random_state=None):
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
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
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

    def fit(self, X, y):
        sizes = self._validate_params_values()
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        if X.shape[0] < 2 and self.batch_norm:
            raise ValueError(f"X: got {X.shape[0]} sample; batch normalization needs at least 2 samples")
        self._label_encoder = LabelEncoder().fit(y)
        self.classes_ = self._label_encoder.classes_
        y_encoded = self._label_encoder.transform(y).astype(np.int64)
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        self.model_ = _train.build_mlp(X.shape[1], len(self.classes_), hidden=sizes,
                                       batch_norm=self.batch_norm, activation=self.activation,
                                       seed=seed)
        optimizer = self._optimizer(self.model_.parameters())
        self.history_ = _train.fit(self.model_, optimizer, X, y_encoded, epochs=self.max_iter,
                                   batch_size=self.batch_size, seed=seed,
                                   callbacks=[_StopOnPlateau(self.tol, self.n_iter_no_change)])
        self.n_iter_ = len(self.history_)
        self.loss_ = self.history_[-1]["loss"]
        self.loss_curve_ = self.history_["loss"]
        self.model_.eval()
        return self

    def _logits(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return self.model_.forward(X)

    def predict_proba(self, X):
        from .functional import softmax
        return softmax(self._logits(X), axis=1)

    def predict_log_proba(self, X):
        from .functional import log_softmax
        return log_softmax(self._logits(X), axis=1)

    def predict(self, X):
        logits = self._logits(X)
        return self.classes_[np.argmax(logits, axis=1)]
