"""The command line and API as a person meets them: every usage mistake is
one line and exit code 2 before any work (the real `pybn` command, in a
temp folder); honest end-of-run summaries; `pybn train` resume, warnings
and divergence; the API gaps; plots checked by reading their axes."""
import os
import shutil
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

import pybn
from pybn import datasets, optim
from pybn import train as T
from pybn.cli import main


def pybn_cmd(*argv, cwd, env=None, timeout=120):
    """Run the real `pybn` command line (as `python -m pybn`)."""
    return subprocess.run([sys.executable, "-m", "pybn", *argv], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def _one_line_usage_error(result, prog):
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    prefix = f"pybn {prog}: error: " if prog else "pybn: error: "
    assert len(lines) == 1 and lines[0].startswith(prefix), result.stderr
    return lines[0]


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "not-a-db.sqlite").write_text("hello, I am not SQLite\n" * 100)
    (tmp_path / "not-a-checkpoint.npz").write_bytes(b"PK\x03\x04junk")
    np.save(tmp_path / "array.npy", np.ones((4, 3)))  # np.load would return it, not an .npz
    (tmp_path / "text.npz").write_text("X,y\n1,0\n")  # np.load would call it pickled data
    return tmp_path


QUICK_TUNE = ["--epochs", "1", "--n-trials", "2", "--rounds", "1", "--no-progress"]


@pytest.mark.parametrize("argv,expected", [
    (["train", "--resume", "nope.npz"], "--resume: nope.npz does not exist"),
    (["train", "--resume", "not-a-checkpoint.npz"], "--resume: cannot read"),
    (["train", "--plot", "out.txt"], "--plot: 'out.txt' should end in"),
    (["train", "--plot", "missing/dir/curve.png"], "--plot: the folder"),
    (["train", "--checkpoint", "missing/dir/ckpt"], "--checkpoint: the folder"),
    (["train", "--threads", "100000"], "--threads: expected 1 to"),
    (["train", "--epochs", "x"], "argument --epochs: invalid int value"),
    (["tune", "--storage", "/missing/dir/s.sqlite", *QUICK_TUNE], "--storage: the folder /missing/dir does not exist"),
    (["tune", "--storage", "not-a-db.sqlite", *QUICK_TUNE], "storage: not-a-db.sqlite is not a usable pybn study database"),
    (["tune", "--plot", "x.txt", *QUICK_TUNE], "--plot: 'x.txt' should end in"),
    (["tune", "--export", "best.txt", *QUICK_TUNE], "--export: 'best.txt' should end in .npz"),
    (["tune", "--data", "typo.npz", *QUICK_TUNE], "--data: typo.npz does not exist"),
    (["tune", "--timeout", "-1", *QUICK_TUNE], "--timeout: expected a number of seconds > 0"),
    (["bench", "--threads", "0"], "--threads: expected 1 to"),
    (["bench", "--threads", "100000"], "--threads: expected 1 to"),
    (["train", "--data", "array.npy"], "--data: array.npy is not an .npz file"),
    (["tune", "--data", "text.npz", *QUICK_TUNE], "--data: text.npz is not an .npz file"),
    (["train", "--resume", "array.npy"], "--resume: array.npy is not an .npz file"),
    (["train", "--resume", "."], "--resume: . is a folder"),
    (["train", "--seed", "-5"], "--seed: expected an integer from 0 to 2**32 - 1"),
    (["tune", "--seed", str(2**40), *QUICK_TUNE], "--seed: expected an integer from 0 to 2**32 - 1"),
    (["train", "--lr-decay", "nan"], "--lr-decay: expected a finite number >= 0, got nan"),
    (["train", "--lr", "inf"], "--lr: expected a finite number > 0, got inf"),
    (["train", "--momentum", "1"], "--momentum: expected a finite number >= 0 and < 1"),
    (["train", "--beta2", "-0.1"], "--beta2: expected a finite number >= 0 and < 1"),
    (["train", "--weight-decay", "nan"], "--weight-decay: expected a finite number >= 0"),
    (["tune", "--n-trials", str(2**70)], "--n-trials: expected an integer from 1 to 2147483647"),
    (["tune", "--study", " ", *QUICK_TUNE], "--study: expected a non-empty name"),
    (["nope"], "argument command: invalid choice"),
])
def test_usage_mistakes_are_one_line_before_any_work(argv, expected, folder):
    result = pybn_cmd(*argv, cwd=folder, timeout=60)
    line = _one_line_usage_error(result, argv[0] if argv[0] in ("train", "tune", "bench") else "")
    assert expected in line, line
    assert not (folder / "pybn-study.sqlite").exists()  # no study was started


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc: a folder even root cannot write")
@pytest.mark.parametrize("argv", [
    ["train", "--checkpoint", "/proc/ckpt"],
    ["train", "--plot", "/proc/curve.png"],
    ["tune", "--export", "/proc/best.npz", *QUICK_TUNE],
    ["tune", "--plot", "/proc/tune.png", *QUICK_TUNE],
    ["tune", "--storage", "/proc/study.sqlite", *QUICK_TUNE],
], ids=lambda argv: f"{argv[0]} {argv[1]}")
def test_an_output_folder_that_cannot_be_written_is_a_usage_error(argv, folder):
    # before, --checkpoint and --plot passed the permission bits (root may
    # write anywhere) and the run ended in a traceback after training
    line = _one_line_usage_error(pybn_cmd(*argv, cwd=folder, timeout=60), argv[0])
    assert f"{argv[1]}: cannot write in the folder /proc" in line, line
    assert not (folder / "pybn-study.sqlite").exists()


def test_a_second_coordinator_is_a_usage_error(folder):
    lock = subprocess.Popen([sys.executable, "-c", (
        "import time, sys\n"
        "from pybn.tune import SQLiteStorage\n"
        "s = SQLiteStorage('pybn-study.sqlite')\n"
        "with s.coordinator_lock():\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(60)\n")], cwd=folder, stdout=subprocess.PIPE, text=True)
    try:
        assert "locked" in lock.stdout.readline()
        line = _one_line_usage_error(pybn_cmd("tune", *QUICK_TUNE, cwd=folder), "tune")
        assert "is being run by another coordinator" in line
    finally:
        lock.kill()


def test_dask_address_nobody_serves_is_a_usage_error(folder):
    pytest.importorskip("distributed")
    start = time.monotonic()
    line = _one_line_usage_error(pybn_cmd("tune", "--dask", "tcp://127.0.0.1:9", *QUICK_TUNE, cwd=folder,
                                          timeout=90), "tune")
    assert "--dask: no Dask scheduler answers at tcp://127.0.0.1:9" in line
    assert time.monotonic() - start < 60


def test_plot_without_matplotlib_is_a_usage_error(folder):
    # a matplotlib that cannot be imported, as on a machine without the extra
    (folder / "matplotlib").mkdir()
    (folder / "matplotlib" / "__init__.py").write_text("raise ImportError('no matplotlib here')\n")
    env = dict(os.environ, PYTHONPATH=str(folder))
    for argv in (["train", "--plot", "c.png"], ["tune", "--plot", "t.png", *QUICK_TUNE]):
        line = _one_line_usage_error(pybn_cmd(*argv, cwd=folder, env=env), argv[0])
        assert "--plot needs matplotlib: pip install 'pybn[plot]'" in line


def test_tune_summary_names_the_metric_test_accuracy_counts_and_next_steps(tmp_path, capsys):
    export = tmp_path / "best.npz"
    assert main(["tune", "--storage", str(tmp_path / "s.sqlite"), "--epochs", "3", "--n-trials", "9",
                 "--workers", "2", "--no-progress", "--export", str(export)]) == 0
    out = capsys.readouterr().out
    assert "score: a trial's best validation accuracy over its 3 epochs" in out
    assert "complete" in out and "pruned" in out and "failed" in out
    if "pruned:" in out:
        assert "stopped early" in out and "of the complete trials' at that epoch" in out
    assert "retrained with its seed: test accuracy" in out and "held-out test examples" in out
    assert "resumes it" in out and "--plot" in out and "--retest" in out and "--export" in out
    # the command that resumes it names exactly the settings that differ from the defaults
    assert f"next: `pybn tune --storage {tmp_path / 's.sqlite'} --epochs 3 --n-trials 9` resumes it" in out
    # the exported model is what pybn train --resume and load_checkpoint load
    ckpt = T.load_checkpoint(export)
    assert ckpt.epoch == 3 and ckpt.extra["trial"] >= 0
    assert main(["train", "--resume", str(export), "--epochs", "4", "--no-progress",
                 "--checkpoint", str(tmp_path / "ck")]) == 0
    assert "epoch 4:" in capsys.readouterr().out


def test_help_shows_the_defaults(capsys):
    for command in ("tune", "train"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert "(default: 20)" in text or "(default: 30)" in text
        assert "(default: 64)" in text or "(default: 180)" in text


# ---- pybn train -----------------------------------------------------------------------


def test_resume_keeps_checkpointing_and_warns_on_flags_it_cannot_honour(tmp_path, capsys):
    ck = tmp_path / "ck"
    assert main(["train", "--epochs", "2", "--hidden", "16", "--checkpoint", str(ck), "--no-progress"]) == 0
    capsys.readouterr()
    # no --checkpoint: it used to stop checkpointing
    assert main(["train", "--resume", str(ck / "last.npz"), "--lr", "1e-4", "--epochs", "4",
                 "--hidden", "64", "--optimizer", "sgd", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert (ck / "epoch-0004.npz").exists() and T.load_checkpoint(ck / "last.npz").epoch == 4
    assert "--hidden is ignored with --resume" in captured.err
    assert "--optimizer is ignored with --resume" in captured.err
    model = T.load_checkpoint(ck / "last.npz").model
    assert model.config["hidden"] == [16]
    assert T.load_checkpoint(ck / "last.npz").extra["lr_changes"] == [[2, 1e-4]]


def test_a_diverging_run_stops_with_a_clear_message(tmp_path, capsys):
    # --lr 100 used to print a loss of 1.6e35 and carry on
    assert main(["train", "--lr", "100", "--optimizer", "sgd", "--epochs", "5", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pybn train: diverged: loss ") and "try a lower learning rate" in err


def test_learning_curves_mark_the_learning_rate_change(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    captured = {}
    original = plt.Figure.savefig

    def keep(fig, *args, **kwargs):
        captured["fig"] = fig
        return original(fig, *args, **kwargs)

    plt.Figure.savefig = keep
    try:
        ck = tmp_path / "ck"
        assert main(["train", "--epochs", "2", "--hidden", "8", "--checkpoint", str(ck), "--no-progress"]) == 0
        assert main(["train", "--resume", str(ck / "last.npz"), "--lr", "1e-4", "--epochs", "3",
                     "--plot", str(tmp_path / "c.png"), "--no-progress"]) == 0
    finally:
        plt.Figure.savefig = original
    ax = captured["fig"].axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert "lr 0.0001" in texts
    assert any(list(line.get_xdata()) == [2.5, 2.5] for line in ax.lines)


# ---- API gaps --------------------------------------------------------------------------


def test_load_checkpoint_fills_an_optimizer_made_by_hand(tmp_path):
    model = T.build_mlp(4, 3, hidden=(5,), seed=0)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    X = np.random.default_rng(0).standard_normal((20, 4))
    y = np.arange(20) % 3
    T.fit(model, opt, X, y, epochs=2)
    T.save_checkpoint(tmp_path / "c.npz", model, opt, epoch=2)
    fresh = T.build_mlp(4, 3, hidden=(5,), seed=1)
    fresh_opt = optim.SGD(fresh.parameters(), lr=0.5, momentum=0.9)
    loaded = T.load_checkpoint(tmp_path / "c.npz", model=fresh, optimizer=fresh_opt)
    assert loaded.optimizer is fresh_opt and fresh_opt.lr == 0.1 and fresh_opt.t == opt.t
    for a, b in zip(opt.state["velocity"], fresh_opt.state["velocity"]):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="saved by another optimizer"):
        T.load_checkpoint(tmp_path / "c.npz", model=fresh, optimizer=optim.Adam(fresh.parameters()))


def test_checkpoint_keeps_the_last_n_and_the_best(tmp_path):
    data = datasets.split_standardize(*datasets.load_digits(), seed=0)
    model = T.build_mlp(64, 10, hidden=(16,), seed=0)
    opt = T.build_optimizer("adam", model.parameters(), lr=3e-3)
    history = T.fit(model, opt, data.X_train, data.y_train, epochs=6, validation_data=(data.X_val, data.y_val),
                    callbacks=[T.Checkpoint(tmp_path, keep_last=2, monitor="val_accuracy")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.npz", "epoch-0005.npz", "epoch-0006.npz",
                                                          "last.npz"]
    best_epoch = int(np.argmax(history["val_accuracy"])) + 1
    assert T.load_checkpoint(tmp_path / "best.npz").epoch == best_epoch


def test_schedules_take_the_optimizer_first_with_a_clear_error():
    with pytest.raises(TypeError, match=r"optimizer: expected a pybn.optim optimizer, got float .*InverseTimeDecay\(optimizer"):
        optim.InverseTimeDecay(0.05, 0.1)


def test_models_have_a_readable_repr_and_a_global_seed():
    model = T.build_mlp(64, 10, hidden=(32,))
    text = repr(model)
    assert text.startswith("Sequential(\n  (0): Dense(in_features=64, out_features=32, bias=False")
    assert "(1): BatchNorm(32, eps=1e-05, momentum=0.1" in text and "(2): ReLU()" in text
    pybn.manual_seed(7)
    a = pybn.nn.Dense(3, 2).W.data.copy()
    pybn.manual_seed(7)
    np.testing.assert_array_equal(pybn.nn.Dense(3, 2).W.data, a)


def test_bnclassifier_takes_mlpclassifier_options_and_partial_fit():
    from sklearn.neural_network import MLPClassifier
    X, y = datasets.load_digits()
    X = (X - X.mean(0)) / (X.std(0) + 1e-8)
    options = dict(early_stopping=True, validation_fraction=0.2, verbose=False, warm_start=False,
                   shuffle=True, n_iter_no_change=3)
    MLPClassifier(**options)  # the same names exist there
    clf = pybn.BNClassifier(max_iter=40, random_state=0, **options).fit(X, y)
    assert clf.n_iter_ < 40 and clf.best_validation_score_ == max(clf.validation_scores_)
    assert clf.score(X, y) > 0.9
    warm = pybn.BNClassifier(max_iter=2, warm_start=True, random_state=0).fit(X, y)
    first = warm.n_iter_
    warm.fit(X, y)
    assert warm.n_iter_ == first + 2
    part = pybn.BNClassifier(random_state=0)
    with pytest.raises(ValueError, match="classes: required on the first call"):
        part.partial_fit(X[:100], y[:100])
    for start in range(0, len(X), 300):
        part.partial_fit(X[start:start + 300], y[start:start + 300], classes=np.arange(10))
    assert part.n_iter_ == len(range(0, len(X), 300)) and part.score(X, y) > 0.7
    unshuffled = pybn.BNClassifier(max_iter=1, shuffle=False, random_state=0).fit(X, y)
    assert unshuffled.n_iter_ == 1


# ---- plots, read back from the figure ----------------------------------------------------


def _study_figure(trials, space, **kwargs):
    pytest.importorskip("matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pybn import plot
    figures = []
    original = plt.Figure.savefig
    plt.Figure.savefig = lambda fig, *a, **k: figures.append(fig)
    try:
        plot.plot_study(trials, space, "unused.png", **kwargs)
    finally:
        plt.Figure.savefig = original
    return figures[0]


def _trials():
    from pybn.tune import Trial
    from pybn.tune.objective import default_space
    space = default_space()
    rng = np.random.default_rng(0)
    trials = []
    for n in range(30):
        params = {k: d.sample(rng) for k, d in space.items()}
        params["batch_size"] = 256  # a single batch size
        state = "complete" if n < 20 else ("pruned" if n < 27 else "failed")
        value = 0.35 if n == 0 else (0.95 + 0.04 * rng.random() if state != "failed" else None)
        trials.append(Trial(n, n // 10, params, n, state, value))
    return trials, space


def test_study_plot_axes_are_in_values_on_the_search_scale():
    trials, space = _trials()
    fig = _study_figure(trials, space, score_name="validation accuracy", title="study 'x'")
    axes = {ax.get_xlabel().split(" ")[0]: ax for ax in fig.axes if ax.get_xlabel()}
    lr = axes["learning_rate"]
    assert lr.get_xscale() == "log"
    lo, hi = lr.get_xlim()
    assert lo <= 1e-4 and hi >= 1e-1 and hi < 0.2  # the search space's range, not the trials'
    beta = axes["beta1"]
    assert beta.get_xscale() == "log"
    labels = [t.get_text() for t in beta.get_xticklabels() if t.get_text()]
    assert "0.99" in labels and "0.9" in labels  # labelled in beta, not log10(1 - beta)
    layers = axes["layers"]
    ticks = [t for t in layers.get_xticks() if layers.get_xlim()[0] <= t <= layers.get_xlim()[1]]
    assert all(float(t).is_integer() for t in ticks)  # no tick at 1.5
    batch = axes["batch_size"]
    assert [t.get_text() for t in batch.get_xticklabels()] == ["16", "32", "64", "128", "256"]
    hidden = axes["hidden_units"]
    assert hidden.get_xscale() == "log" and {16, 256} <= {int(t) for t in hidden.get_xticks()}
    # the top of the score range is what is shown; the 0.35 outlier sits on the edge
    ymin, ymax = lr.get_ylim()
    assert ymin > 0.8 and ymax < 1.01
    # pruned (hollow) and failed (x) are drawn, and the title names study and metric
    labels = lr.get_legend_handles_labels()[1]
    assert any("pruned" in label for label in labels) and "failed" in labels
    title = fig._suptitle.get_text()
    assert "study 'x'" in title and "validation accuracy" in title and "7 pruned" in title and "3 failed" in title


def test_compare_batchnorm_plot_has_both_bands_on_one_log_axis(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figures = []
    original = plt.Figure.savefig

    def keep(fig, *args, **kwargs):
        figures.append(fig)
        return original(fig, *args, **kwargs)

    plt.Figure.savefig = keep
    try:
        assert main(["tune", "--compare-batchnorm", "--storage", str(tmp_path / "c.sqlite"), "--n-trials", "6",
                     "--epochs", "2", "--workers", "2", "--good", "0.5", "--no-progress",
                     "--plot", str(tmp_path / "cmp.png")]) == 0
    finally:
        plt.Figure.savefig = original
    assert (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"
    assert "plot:" in capsys.readouterr().out
    (ax,) = figures[-1].axes
    assert ax.get_xscale() == "log" and ax.get_xlim()[0] <= 1e-4 and ax.get_xlim()[1] >= 10
    labels = ax.get_legend_handles_labels()[1]
    assert "with batch norm" in labels and "without batch norm" in labels


def test_compare_batchnorm_progress_bars_are_labelled(tmp_path):
    result = pybn_cmd("tune", "--compare-batchnorm", "--n-trials", "2", "--epochs", "1", "--workers", "1",
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "with batch norm" in result.stderr and "without batch norm" in result.stderr
    assert "round 0" not in result.stderr


def test_the_library_imports_nothing_from_the_front_ends():
    import ast
    import pathlib
    root = pathlib.Path(pybn.__file__).parent
    for path in root.rglob("*.py"):
        if "cli" in path.relative_to(root).parts[:1] or path.name == "__main__.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                assert not (module == "cli" or module.startswith("cli.") or ".cli" in module
                            or module.startswith("pybn.cli")), (path, module)
                assert not any(a.name == "cli" for a in node.names), (path, module)


def test_the_sdist_ships_no_study_or_lock_files(tmp_path):
    tomllib = pytest.importorskip("tomllib")
    import pathlib
    config = tomllib.loads((pathlib.Path(__file__).parent.parent / "pyproject.toml").read_text())
    excluded = config["tool"]["scikit-build"]["sdist"]["exclude"]
    for pattern in ("*.sqlite", "*.sqlite.lock", "*.sqlite-wal", "*.sqlite-shm"):
        assert pattern in excluded or f"**/{pattern}" in excluded


def test_learning_curves_take_plain_lists_of_epoch_logs_and_refuse_the_rest(tmp_path):
    pytest.importorskip("matplotlib")
    from pybn import plot
    # a checkpoint's history as JSON gives it back (no "epoch" key: positions count)
    plot.plot_learning_curves([{"loss": 1.0, "accuracy": 0.5}, {"loss": 0.5, "accuracy": 0.7}],
                              tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 0
    for bad in ("history.json", 3, {"loss": [1.0]}):  # were a KeyError, a TypeError naming nothing
        with pytest.raises(TypeError, match="history: expected the History train.fit returns"):
            plot.plot_learning_curves(bad, tmp_path / "d.png")


def _ctrl_c_as_in_a_terminal():
    """SIGINT handled as a terminal's Ctrl-C reaches the command: a suite run
    as a background job (`.ci/run &`) inherits SIGINT ignored, and Python
    then installs no KeyboardInterrupt handler, so the signal did nothing."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("checkpoint", [True, False], ids=["checkpointed", "unsaved"])
def test_ctrl_c_in_train_says_where_the_run_is_without_a_traceback(checkpoint, tmp_path):
    import signal
    argv = [sys.executable, "-m", "pybn", "train", "--epochs", "100000", "--hidden", "8", "--no-progress"]
    argv += ["--checkpoint", "ck"] if checkpoint else []
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_ctrl_c_as_in_a_terminal)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (tmp_path / "ck" / "last.npz").exists():
            time.sleep(0.2)
            if not checkpoint and time.monotonic() > deadline - 52:
                break  # well past the imports (a SIGINT there would be Python's traceback), into training
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err, err
    if checkpoint:
        assert "pybn train: interrupted; ck/last.npz holds the last finished epoch: " \
               "`pybn train --resume ck/last.npz --epochs 100000` continues" in err
        assert T.load_checkpoint(tmp_path / "ck" / "last.npz").epoch >= 1
    else:
        assert "pybn train: interrupted; no checkpoint was saved (--checkpoint DIR saves one every epoch)" in err


def test_ctrl_c_in_bench_is_one_line(tmp_path):
    import signal
    proc = subprocess.Popen([sys.executable, "-m", "pybn", "bench", "--full", "--no-torch", "--no-progress"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_ctrl_c_as_in_a_terminal)
    try:
        time.sleep(8)  # well past the imports, into the timings
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err.strip() == "pybn bench: interrupted"


def test_retest_says_how_many_it_re_ran(tmp_path, capsys):
    # '--retest 3' of a one-trial study printed "re-test of the best 3" over one row
    assert main(["tune", "--storage", str(tmp_path / "s.sqlite"), *QUICK_TUNE, "--n-trials", "1",
                 "--retest", "3"]) == 0
    out = capsys.readouterr().out
    assert "re-test of the best 1 (of 3 asked: the study has 1 complete) with fresh training seeds:" in out
    assert out.count("stored ") == 1
