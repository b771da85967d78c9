"""fit(): reproducibility, checkpoint/resume equals uninterrupted training,
callbacks, divergence, digits accuracy, data helpers."""
import numpy as np
import pytest

from pybn import datasets
from pybn import train as T


@pytest.fixture(scope="module")
def digits():
    X, y = datasets.load_digits()
    return datasets.split_standardize(X, y, seed=0)


def _run(data, epochs, seed=0, **kw):
    model = T.build_mlp(64, 10, hidden=(32,), seed=seed)
    opt = T.build_optimizer("adam", model.parameters(), lr=3e-3)
    history = T.fit(model, opt, data.X_train, data.y_train, epochs=epochs, seed=seed,
                    validation_data=(data.X_val, data.y_val), **kw)
    return model, opt, history


def test_same_seed_gives_bitwise_same_weights(digits):
    a, _, ha = _run(digits, 3)
    b, _, hb = _run(digits, 3)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        np.testing.assert_array_equal(x, y, err_msg=name)
    assert ha["loss"] == hb["loss"]
    c, _, _ = _run(digits, 3, seed=1)
    assert not np.array_equal(a.state_dict()["0.W"], c.state_dict()["0.W"])


def test_resume_from_checkpoint_equals_uninterrupted_training(digits, tmp_path):
    full, _, full_history = _run(digits, 4)
    _run(digits, 2, callbacks=[T.Checkpoint(tmp_path)])
    ckpt = T.load_checkpoint(tmp_path / "last.npz")
    assert ckpt.epoch == 2
    T.fit(ckpt.model, ckpt.optimizer, digits.X_train, digits.y_train, epochs=4, seed=0,
          start_epoch=ckpt.epoch, validation_data=(digits.X_val, digits.y_val))
    for (name, x), (_, y) in zip(full.state_dict().items(), ckpt.model.state_dict().items()):
        np.testing.assert_array_equal(x, y, err_msg=name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-0001.npz", "epoch-0002.npz", "last.npz"]


def test_history_and_learning_rate_callbacks(digits):
    _, opt, history = _run(digits, 3, callbacks=[T.LearningRateChange({2: 1e-4})])
    assert [logs["epoch"] for logs in history] == [0, 1, 2]
    assert history["lr"] == [3e-3, 3e-3, 1e-4]
    assert all(0 <= a <= 1 for a in history["val_accuracy"])
    assert history["loss"][2] < history["loss"][0]


def test_early_stopping_stops_and_restores_best(digits):
    stopper = T.EarlyStopping(monitor="val_loss", patience=2)
    model, _, history = _run(digits, 60, callbacks=[stopper])
    assert len(history) < 60
    losses = history["val_loss"]
    best = int(np.argmin(losses))
    assert best < len(losses) - 1  # the last epochs were worse: there is something to restore
    # the model holds the best epoch's weights again, not the last epoch's
    val_loss, _ = T.evaluate(model, digits.X_val, digits.y_val)
    assert val_loss == pytest.approx(losses[best], rel=1e-9)
    assert val_loss != pytest.approx(losses[-1], rel=1e-9)
    for name, value in stopper.best_state.items():
        np.testing.assert_array_equal(model.state_dict()[name], value, err_msg=name)
    with pytest.raises(ValueError, match="monitor: 'nope' is not logged"):
        _run(digits, 1, callbacks=[T.EarlyStopping(monitor="nope")])


def test_divergence_stops_with_a_clear_message(digits):
    model = T.build_mlp(64, 10, hidden=(32,), batch_norm=False)
    opt = T.build_optimizer("sgd", model.parameters(), lr=1e6)
    with pytest.raises(T.TrainingDiverged, match="loss (became|reached) .* try a lower learning rate"):
        T.fit(model, opt, digits.X_train, digits.y_train, epochs=5)


def test_digits_accuracy_with_batch_norm(digits):
    model = T.build_mlp(64, 10, hidden=(128, 64), seed=0)
    opt = T.build_optimizer("adam", model.parameters(), lr=1e-3)
    T.fit(model, opt, digits.X_train, digits.y_train, epochs=30, seed=0)
    _, accuracy = T.evaluate(model, digits.X_test, digits.y_test)
    assert accuracy >= 0.95


def test_last_minibatch_of_one_joins_the_previous(digits):
    batches = T._batches(np.arange(129), 64)
    assert [len(b) for b in batches] == [64, 65]
    model = T.build_mlp(64, 10, hidden=(8,))
    opt = T.build_optimizer("sgd", model.parameters(), lr=0.01)
    T.fit(model, opt, digits.X_train[:129], digits.y_train[:129], epochs=1, batch_size=64)


def test_checkpoint_files_are_never_pickles(tmp_path):
    model = T.build_mlp(4, 3, hidden=(5,))
    T.save_checkpoint(tmp_path / "m.npz", model, epoch=1)
    with np.load(tmp_path / "m.npz", allow_pickle=False) as data:
        assert all(data[k].dtype != object for k in data.files)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="checkpoint: .*bad.npz is not an .npz file"):
        T.load_checkpoint(tmp_path / "bad.npz")
    np.savez(tmp_path / "other.npz", a=np.ones(2))
    with pytest.raises(ValueError, match="is not a pybn checkpoint"):
        T.load_checkpoint(tmp_path / "other.npz")


def test_fit_and_builder_bad_arguments(digits):
    with pytest.raises(ValueError, match="activation: expected one of"):
        T.build_mlp(4, 3, activation="sigmoid")
    with pytest.raises(ValueError, match="hidden: expected widths >= 1"):
        T.build_mlp(4, 3, hidden=(0,))
    with pytest.raises(ValueError, match="optimizer: expected one of"):
        T.build_optimizer("lbfgs", [])
    model = T.build_mlp(64, 10, hidden=(4,))
    opt = T.build_optimizer("sgd", model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"X, y: expected X \(m, n\) and y \(m,\)"):
        T.fit(model, opt, digits.X_train, digits.y_train[:-1], epochs=1)
    with pytest.raises(ValueError, match="batch_size: expected an int >= 1"):
        T.fit(model, opt, digits.X_train, digits.y_train, epochs=1, batch_size=0)
    # each was an AttributeError, a ZeroDivisionError or a TypeError naming nothing
    X, y = digits.X_train[:8], digits.y_train[:8]
    with pytest.raises(TypeError, match="batch_size: expected an int >= 1, got NoneType"):
        T.fit(model, opt, X, y, epochs=1, batch_size=None)
    with pytest.raises(TypeError, match="epochs: expected an int, got str"):
        T.fit(model, opt, X, y, epochs="3")
    with pytest.raises(ValueError, match="X, y: expected at least one example"):
        T.fit(model, opt, X[:0], y[:0], epochs=1)
    with pytest.raises(ValueError, match="validation_data: expected at least one example"):
        T.fit(model, opt, X, y, epochs=1, validation_data=(X[:0], y[:0]))
    with pytest.raises(TypeError, match="validation_data: expected a pair"):
        T.fit(model, opt, X, y, epochs=1, validation_data=X)
    with pytest.raises(ValueError, match="X, y: expected at least one example"):
        T.evaluate(model, X[:0], y[:0])
    with pytest.raises(ValueError, match=r"X, y: expected X \(m, n\) and y \(m,\)"):
        T.evaluate(model, X, y[:-1])
    # lists are arrays, as in scikit-learn
    T.fit(model, opt, X.tolist(), y.tolist(), epochs=1)
    assert 0 <= T.evaluate(model, X.tolist(), y.tolist())[1] <= 1


def test_split_standardizes_with_training_statistics_only():
    X, y = datasets.make_synthetic(n_samples=600, n_features=8, n_classes=3, seed=1)
    data = datasets.split_standardize(X, y, seed=0)
    np.testing.assert_allclose(data.X_train.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(data.X_train.std(0), 1)
    assert abs(data.X_test.mean()) > 1e-6  # test data was not standardized by its own stats
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 600


def test_load_npz(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.ones((5, 2)), y=np.arange(5))
    X, y = datasets.load_npz(tmp_path / "d.npz")
    assert X.shape == (5, 2) and y.dtype == np.int64
    np.savez(tmp_path / "bad.npz", X=np.ones((5, 2)))
    with pytest.raises(ValueError, match=r"lacks arrays \['y'\]"):
        datasets.load_npz(tmp_path / "bad.npz")
    np.savez(tmp_path / "obj.npz", X=np.array([{"a": 1}], dtype=object), y=np.arange(1))
    with pytest.raises(ValueError):  # object arrays would need pickle: refused
        datasets.load_npz(tmp_path / "obj.npz")
    # labels index the output units: 10**9 asked for a billion of them (an
    # allocation error deep in training); 1-based labels are fine
    X = np.ones((8, 2))
    np.savez(tmp_path / "far.npz", X=X, y=np.array([0, 1, 2, 3] * 2) * 10**8)
    with pytest.raises(ValueError, match=r"uses 4 labels up to 300000000; .* relabel them 0..3"):
        datasets.load_npz(tmp_path / "far.npz")
    np.savez(tmp_path / "one-based.npz", X=X, y=np.array([1, 2, 3, 4] * 2))
    assert datasets.load_npz(tmp_path / "one-based.npz")[1].max() == 4


def test_fit_gives_the_cores_to_one_thread_pool(digits, monkeypatch):
    # Two spin-waiting pools (BLAS's and the kernels' OpenMP team) starved
    # each other: a 3x256 epoch at batch 128 on 2 cores took 460 ms, not 16.
    import os
    import pybn
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs 2 cores for a multi-threaded BLAS")
    seen = []

    class Probe:
        def on_epoch_end(self, epoch, logs, model, optimizer):
            seen.append(pybn.get_num_threads())

    pybn.set_num_threads(2)
    import threadpoolctl
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        assert T.blas_threads() == 2
        _run(digits, 1, callbacks=[Probe()])
    assert seen == [1] and pybn.get_num_threads() == 2  # restored afterwards
    with threadpoolctl.threadpool_limits(1, user_api="blas"):  # a one-thread BLAS leaves the kernels theirs
        _run(digits, 1, callbacks=[Probe()])
    assert seen == [1, 2]
