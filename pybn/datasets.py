"""Data for training and benchmarks: scikit-learn's bundled digits (no
download), user .npz files, and synthetic classification problems; with
train/validation/test splits standardized by training statistics only."""
from typing import NamedTuple

import numpy as np

from ._npz import read_npz

__all__ = ["Split", "load_digits", "load_npz", "make_synthetic", "split_standardize"]


class Split(NamedTuple):
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray


def load_digits():
    """(X, y): the 1797 8x8 handwritten digits bundled with scikit-learn."""
    from sklearn.datasets import load_digits as sk_load_digits
    data = sk_load_digits()
    return data.data.astype(np.float64), data.target.astype(np.int64)


MAX_EXTRA_UNUSED_LABELS = 10  # gaps up to the used labels' count + this (e.g. labels 1..K) are fine


def load_npz(path):
    """(X, y) from an .npz holding arrays X (m, n) and integer labels y (m,)."""
    arrays = read_npz(path, "data", names=["X", "y"])
    X, y = arrays["X"], arrays["y"]
    if X.ndim != 2 or X.dtype.kind not in "fiu" or X.shape[1] == 0:
        raise ValueError(f"data: X must be a 2-D numeric array with at least one feature, got shape {X.shape} "
                         f"dtype {X.dtype}")
    if y.shape != (X.shape[0],) or y.dtype.kind not in "iu":
        raise ValueError(f"data: y must be integer labels of shape ({X.shape[0]},), got {y.shape} {y.dtype}")
    if X.size and not np.isfinite(X).all():
        raise ValueError(f"data: X of {path} holds NaN or inf values")
    if y.size and y.min() < 0:
        raise ValueError(f"data: y of {path} holds a negative label ({y.min()}); labels are 0, 1, ...")
    used = np.unique(y).size
    if used < 2:
        raise ValueError(f"data: y of {path} holds {used} class(es); at least 2 are needed")
    # a label is the index of its output unit: labels up to 10**9 would ask
    # for a billion units (an allocation error deep in training)
    unused = int(y.max()) + 1 - used
    if unused > used + MAX_EXTRA_UNUSED_LABELS:
        raise ValueError(f"data: y of {path} uses {used} labels up to {y.max()}; labels index the output "
                         f"units 0..{y.max()}, so {unused} would be unused: relabel them 0..{used - 1}")
    return X.astype(np.float64), y.astype(np.int64)


def make_synthetic(n_samples=2000, n_features=64, n_classes=10, seed=0):
    """A seeded synthetic classification problem (scikit-learn's generator)."""
    from sklearn.datasets import make_classification
    X, y = make_classification(n_samples=n_samples, n_features=n_features,
                               n_informative=min(n_features, max(2, n_features // 2)),
                               n_classes=n_classes, n_clusters_per_class=1, random_state=seed)
    return X.astype(np.float64), y.astype(np.int64)


def split_standardize(X, y, val_size=0.15, test_size=0.15, seed=0):
    """Stratified train/validation/test split; each part standardized with
    the training mean and standard deviation (constant features get 1)."""
    from sklearn.model_selection import train_test_split
    try:
        X_rest, X_test, y_rest, y_test = train_test_split(X, y, test_size=test_size, random_state=seed,
                                                          stratify=y)
        X_train, X_val, y_train, y_val = train_test_split(
            X_rest, y_rest, test_size=val_size / (1.0 - test_size), random_state=seed, stratify=y_rest)
    except ValueError as error:  # scikit-learn's words alone do not say which split or why
        raise ValueError(f"data: {len(y)} examples of {np.unique(y).size} classes are too few to split "
                         f"{1 - val_size - test_size:.0%}/{val_size:.0%}/{test_size:.0%} into train/validation/"
                         f"test with every class in each part ({error})") from None
    mean = X_train.mean(axis=0)
    std = X_train.std(axis=0)
    std[std == 0] = 1.0
    return Split(*(((X_part - mean) / std) if i % 2 == 0 else X_part
                   for i, X_part in enumerate((X_train, y_train, X_val, y_val, X_test, y_test))))
