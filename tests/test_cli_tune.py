"""`pybn tune` end to end: the table, the plot, resume on the same storage,
and a real SIGKILL of a running tune that loses and repeats nothing."""
import json
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from pybn.cli import main
from pybn.cli.tune import split_budget

QUICK = ["--epochs", "2", "--no-progress"]


def test_tune_prints_the_best_trials_and_plots(tmp_path, capsys):
    storage = tmp_path / "s.sqlite"
    png = tmp_path / "tune.png"
    assert main(["tune", "--storage", str(storage), "--n-trials", "6", "--rounds", "2",
                 "--workers", "1", "--plot", str(png), "--top", "3"] + QUICK) == 0
    out = capsys.readouterr().out
    assert "6 trials" in out and "rank" in out and "learning_rate" in out
    assert png.read_bytes()[:4] == b"\x89PNG"
    # same command again: everything is stored, nothing runs
    assert main(["tune", "--storage", str(storage), "--n-trials", "6", "--rounds", "2",
                 "--workers", "1"] + QUICK) == 0
    assert "0 run now" in capsys.readouterr().out


def test_tune_compare_batchnorm(tmp_path, capsys):
    assert main(["tune", "--compare-batchnorm", "--storage", str(tmp_path / "c.sqlite"),
                 "--n-trials", "4", "--workers", "1", "--good", "0.5"] + QUICK) == 0
    out = capsys.readouterr().out
    assert "with batch norm" in out and "without batch norm" in out and "decades" in out


def test_split_budget():
    assert split_budget(90, 5) == [30, 8, 12, 16, 24]  # the default: a random third, then growing rounds
    assert split_budget(60, 3) == [20, 16, 24]
    assert split_budget(10, 3) == [3, 2, 5]
    assert split_budget(92, 5) == [30, 8, 12, 18, 24]
    assert split_budget(6, 6) == [1] * 6 and split_budget(7, 1) == [7] and split_budget(8, 2) == [4, 4]
    for n in range(1, 200):
        for rounds in range(1, min(n, 12) + 1):
            counts = split_budget(n, rounds)
            assert sum(counts) == n and len(counts) == rounds and min(counts) >= 1
            if rounds > 2 and n >= 6 * rounds:  # the finer rounds grow
                assert counts[1:] == sorted(counts[1:]), (n, rounds, counts)


@pytest.mark.parametrize("argv,message", [
    (["--n-trials", "0"], "--n-trials: expected an integer >= 1, got 0"),
    (["--rounds", "4", "--n-trials", "3"], "--n-trials must be at least --rounds"),
    (["--workers", "0"], "--workers: expected an integer >= 1, got 0"),
    (["--epochs", "two"], "argument --epochs: invalid int value: 'two'"),
    (["--prune-percentile", "120"], "--prune-percentile: expected a number in [0, 100], got 120"),
    (["--pruner", "percentile", "--prune-warmup", "-1"], "--prune-warmup: expected an integer >= 0, got -1"),
    (["--pruner", "median"], "argument --pruner: invalid choice: 'median'"),
    (["--prune-warmup", "0"], "--prune-warmup: expected an integer >= 1, got 0"),
    (["--pruner", "halving", "--reduction-factor", "1"], "--reduction-factor: expected an integer >= 2, got 1"),
    (["--pruner", "halving", "--prune-percentile", "50"],
     "--prune-percentile goes with --pruner percentile, not --pruner halving"),
    (["--pruner", "percentile", "--reduction-factor", "4"],
     "--reduction-factor goes with --pruner halving, not --pruner percentile"),
    (["--pruner", "none", "--prune-warmup", "3"],
     "--prune-warmup goes with --pruner percentile or halving, not --pruner none"),
    (["--epochs", "3", "--prune-warmup", "3"],  # would have run without pruning, silently
     "--prune-warmup: 3 leaves no epoch before the last of --epochs 3 at which to prune (expected fewer than 3;"),
    (["--epochs", "3", "--pruner", "percentile", "--prune-warmup", "2"],  # judged after epoch 3, the last
     "--prune-warmup: 2 leaves no epoch before the last of --epochs 3 at which to prune (expected fewer than 2;"),
])
def test_tune_bad_arguments(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        assert main(["tune", "--storage", str(tmp_path / "s.sqlite")] + argv) == 2
        raise SystemExit(2)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pybn tune: error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "s.sqlite").exists()  # before any work


def test_tune_pruner_flags_define_the_study(tmp_path, capsys):
    storage = str(tmp_path / "s.sqlite")
    argv = ["tune", "--storage", storage, "--n-trials", "12", "--rounds", "2", "--workers", "1"] + QUICK
    assert main(argv + ["--pruner", "none"]) == 0
    assert "0 pruned" in capsys.readouterr().out
    with sqlite3.connect(storage) as db:
        assert db.execute("SELECT COUNT(*) FROM trials WHERE state = 'pruned'").fetchone() == (0,)
    # another pruner on the same study is refused before any trial, naming it
    assert main(argv + ["--pruner", "percentile", "--prune-percentile", "50"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pybn tune: error: study") and "pruner" in err
    assert err.count("\n") == 1, err


def test_tune_successive_halving(tmp_path, capsys):
    storage = str(tmp_path / "s.sqlite")
    argv = ["tune", "--storage", storage, "--n-trials", "36", "--rounds", "1", "--workers", "1",
            "--epochs", "4", "--no-progress", "--prune-warmup", "1"]  # the default pruner: halving
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert ("stopped early by successive halving: after epochs 1, 3 only the best 1/3 of the trials that "
            "reached the epoch went on") in out
    with sqlite3.connect(storage) as db:
        lengths = [len(json.loads(row[0])) for row in
                   db.execute("SELECT intermediate FROM trials WHERE state = 'pruned'")]
    assert len(lengths) >= 8 and set(lengths) <= {1, 3}  # cut at the rungs only
    # the rung schedule defines the study: another factor is refused before any trial
    assert main(argv + ["--reduction-factor", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pybn tune: error: study") and "pruner" in err and err.count("\n") == 1


def test_a_study_of_another_pruner_says_how_to_resume_it(tmp_path, capsys):
    """A study run with another pruner (as the default before successive
    halving was) is refused with the flags that resume it; those flags, and
    the summary's own `next:` command, do resume it."""
    storage = str(tmp_path / "s.sqlite")
    argv = ["tune", "--storage", storage, "--n-trials", "6", "--rounds", "2", "--workers", "1"] + QUICK
    assert main(argv + ["--pruner", "percentile", "--prune-warmup", "0"]) == 0
    out = capsys.readouterr().out
    next_command = out.split("next: `")[1].split("`")[0]
    assert "--pruner percentile --prune-warmup 0" in next_command
    assert main(shlex.split(next_command)[1:] + ["--no-progress"]) == 0
    assert "0 run now" in capsys.readouterr().out
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "to resume it, pass --pruner percentile --prune-warmup 0;" in err and err.count("\n") == 1
    assert main(argv + ["--pruner", "percentile", "--prune-warmup", "0"]) == 0
    assert "0 run now" in capsys.readouterr().out


def _finished(storage):
    if not os.path.exists(storage):
        return {}
    try:
        with sqlite3.connect(storage, timeout=5) as conn:
            rows = conn.execute("SELECT number, state, value, finished, params FROM trials "
                                "WHERE state != 'running'").fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return {}
    return {r[0]: r[1:] for r in rows}


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigkill_mid_study_loses_nothing_and_repeats_nothing(tmp_path, workers):
    storage = str(tmp_path / "kill.sqlite")
    cmd = [sys.executable, "-m", "pybn", "tune", "--storage", storage, "--n-trials", "16",
           "--rounds", "2", "--workers", workers, "--epochs", "4", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, cwd=tmp_path)
    deadline = time.time() + 120
    while len(_finished(storage)) < 4 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, f"pybn tune ended (exit {proc.returncode}) before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # coordinator and workers alike
    proc.wait()
    before = _finished(storage)
    assert len(before) >= 4

    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300,
                   cwd=tmp_path)
    after = _finished(storage)
    assert sorted(after) == list(range(16))  # every trial once, none left running
    for number, row in before.items():
        assert after[number] == row  # finished before the kill: untouched, not re-run
    with sqlite3.connect(storage) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_tune_on_a_dask_cluster(tmp_path, capsys):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        assert main(["tune", "--dask", cluster.scheduler_address, "--storage", str(tmp_path / "d.sqlite"),
                     "--n-trials", "4", "--rounds", "2"] + QUICK) == 0
    out = capsys.readouterr().out
    assert "4 trials" in out and "on 2 worker(s)" in out
