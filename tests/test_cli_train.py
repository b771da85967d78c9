"""`pybn train` end to end: progress, checkpoints, resume with a new
learning rate, learning-curve PNG, bad arguments."""
import subprocess
import sys

import numpy as np
import pytest

from pybn.cli import main


def test_train_checkpoint_resume_and_plot(tmp_path, capsys):
    ck = tmp_path / "ck"
    png = tmp_path / "curve.png"
    assert main(["train", "--epochs", "2", "--hidden", "16", "--checkpoint", str(ck),
                 "--plot", str(png), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy:" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (ck / "epoch-0002.npz").exists()
    assert main(["train", "--epochs", "4", "--resume", str(ck / "last.npz"), "--lr", "1e-4",
                 "--no-progress", "--checkpoint", str(ck)]) == 0
    out = capsys.readouterr().out
    assert "resumed" in out and "lr 0.0001" in out and "epoch 4:" in out
    assert (ck / "epoch-0004.npz").exists()


def test_train_on_user_npz(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 5))
    y = (X[:, 0] > 0).astype(int)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    assert main(["train", "--data", str(tmp_path / "d.npz"), "--epochs", "3", "--no-progress",
                 "--hidden", "8", "--optimizer", "sgd", "--lr", "0.05"]) == 0
    assert "test accuracy:" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["--lr", "-1"], "--lr: expected a finite number > 0"),
    (["--epochs", "0"], "--epochs: expected an integer >= 1, got 0"),
    (["--hidden", "0"], "--hidden: widths must be >= 1"),
])
def test_train_bad_arguments(argv, message, capsys):
    assert main(["train", "--no-progress"] + argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pybn train: error: {message}") and err.count("\n") == 1


def test_train_shows_a_progress_bar(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pybn", "train", "--epochs", "2", "--hidden", "8"],
                         capture_output=True, text=True, check=True, cwd=tmp_path)
    assert "epochs" in out.stderr and "val_accuracy" in out.stderr


def test_train_out_of_memory_is_one_line(capsys):
    # 10**10 hidden units ask for terabytes: numpy refuses at once, and the
    # user reads what happened, not a traceback
    assert main(["train", "--no-progress", "--hidden", str(10**10), "--epochs", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pybn train: error: out of memory (Unable to allocate") and err.count("\n") == 1


@pytest.mark.parametrize("n_features,n_classes,message", [
    (5, 3, "the checkpoint's model reads 64 features, the data has 5"),
    (64, 12, "the checkpoint's model has 10 output classes (labels 0..9), the data's labels go up to 11"),
])
def test_resume_on_data_the_model_cannot_read(n_features, n_classes, message, tmp_path, capsys):
    assert main(["train", "--epochs", "1", "--hidden", "8", "--checkpoint", str(tmp_path / "ck"),
                 "--no-progress"]) == 0
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", X=rng.standard_normal((120, n_features)), y=np.arange(120) % n_classes)
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "ck" / "last.npz"), "--data", str(tmp_path / "d.npz"),
                 "--epochs", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err == f"pybn train: error: --data: {message}\n"
