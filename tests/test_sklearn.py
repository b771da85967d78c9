"""BNClassifier: scikit-learn's estimator checks, meta-estimators, digits
accuracy with defaults, reproducibility, bad arguments."""
import numpy as np
import pytest
from sklearn.model_selection import RandomizedSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from pybn import BNClassifier, datasets


@parametrize_with_checks([BNClassifier(max_iter=30)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def digits():
    X, y = datasets.load_digits()
    return datasets.split_standardize(X, y, seed=0)


def test_defaults_reach_97_percent_on_standardized_digits(digits):
    X = np.vstack([digits.X_train, digits.X_val])
    y = np.concatenate([digits.y_train, digits.y_val])
    clf = BNClassifier(random_state=0).fit(X, y)
    assert clf.score(digits.X_test, digits.y_test) >= 0.97
    proba = clf.predict_proba(digits.X_test)
    np.testing.assert_allclose(proba.sum(1), 1)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(1)], clf.predict(digits.X_test))


def test_same_random_state_same_model(digits):
    a = BNClassifier(hidden_layer_sizes=(16,), max_iter=3, random_state=7).fit(digits.X_val, digits.y_val)
    b = BNClassifier(hidden_layer_sizes=(16,), max_iter=3, random_state=7).fit(digits.X_val, digits.y_val)
    np.testing.assert_array_equal(a.predict_proba(digits.X_test), b.predict_proba(digits.X_test))


def test_predictions_do_not_depend_on_the_order_of_the_samples(digits):
    # float32 BLAS gives a row other bits at another position in the batch
    # (OpenBLAS's Haswell kernels: 4.5e-7 apart in predict_proba); the
    # predictions are computed in float64 from the float32 fit.
    clf = BNClassifier(max_iter=3, random_state=0).fit(digits.X_train, digits.y_train)
    assert clf.model_.parameters()[0].data.dtype == np.float32
    X = digits.X_test
    order = np.random.default_rng(0).permutation(len(X))
    np.testing.assert_allclose(clf.predict_proba(X)[order], clf.predict_proba(X[order]), rtol=1e-12, atol=1e-15)


def test_works_in_pipeline_cross_val_and_randomized_search():
    X, y = datasets.load_digits()
    X, y = X[:400], y[:400]
    pipe = make_pipeline(StandardScaler(), BNClassifier(hidden_layer_sizes=(32,), max_iter=10,
                                                        learning_rate_init=1e-2,
                                                        random_state=0))
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.mean() > 0.8
    search = RandomizedSearchCV(pipe, {"bnclassifier__learning_rate_init": [1e-3, 1e-2],
                                       "bnclassifier__solver": ["adam", "sgd", "rmsprop"]},
                                n_iter=3, cv=2, random_state=0)
    search.fit(X, y)
    assert search.best_score_ > 0.7


def test_string_labels_and_unseen_labels_at_score():
    X, y = datasets.make_synthetic(n_samples=200, n_features=6, n_classes=3, seed=0)
    labels = np.array(["cat", "dog", "eel"])[y]
    clf = BNClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0).fit(X, labels)
    assert set(clf.predict(X)) <= {"cat", "dog", "eel"}
    with pytest.raises(ValueError, match="features"):
        clf.predict(X[:, :3])


@pytest.mark.parametrize("params,match", [
    ({"hidden_layer_sizes": (0,)}, "hidden_layer_sizes"),
    ({"hidden_layer_sizes": (-3, 2)}, "hidden_layer_sizes"),
    ({"learning_rate_init": 0}, "learning_rate_init"),
    ({"learning_rate_init": -1e-3}, "learning_rate_init"),
    ({"solver": "lbfgs"}, "solver"),
    ({"beta_1": 1.0}, "beta1"),
    ({"beta_2": -0.5}, "beta2"),
    ({"batch_size": 0}, "batch_size"),
    ({"max_iter": -1}, "max_iter"),
    ({"activation": "sigmoid"}, "activation"),
])
def test_bad_parameters_are_clear_errors(params, match):
    X, y = datasets.make_synthetic(n_samples=50, n_features=4, n_classes=2, seed=0)
    with pytest.raises(ValueError, match=match):
        BNClassifier(**{"max_iter": 1, **params}).fit(X, y)


def test_wrong_shapes_are_clear_errors():
    with pytest.raises(ValueError):
        BNClassifier(max_iter=1).fit(np.ones((5, 2)), np.arange(4))
    with pytest.raises(ValueError):
        BNClassifier(max_iter=1).fit(np.ones(5), np.arange(5))
