"""Studies you can trust: a study is tied to its settings, grows without
overlapping rounds, keeps trial failures apart from infrastructure losses,
and survives faults of real processes (killed coordinators, objectives that
exit, a killed Dask scheduler), bounded in time."""
import ast
import concurrent.futures as cf
import json
import os
import pathlib
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from pybn.cli import main
from pybn.tune import SQLiteStorage, Study, StudyMismatch, Uniform, get_all_study_names
from pybn.tune import execution

SPACE = {"x": Uniform(0, 1)}
QUICK = ["--epochs", "1", "--no-progress", "--workers", "1"]


def value_of_x(params):
    return params["x"]


def exits_for_large_x(params):
    """An objective that leaves its process the hard ways for x > 0.6."""
    if params["x"] > 0.85:
        os._exit(3)
    if params["x"] > 0.75:
        raise SystemExit("objective called sys.exit")
    if params["x"] > 0.6:
        raise KeyboardInterrupt
    return params["x"]


def sleeps_for_large_x(params):
    if params["x"] > 0.7:
        time.sleep(60)
    return params["x"]


def raises_value_error(params):
    raise ValueError(f"bad x {params['x']:.3f}")


def report_pid(params):
    return float(os.getpid())


def _rows(storage, sql):
    with sqlite3.connect(storage) as conn:
        return conn.execute(sql).fetchall()


def _tune(tmp_path, *argv, storage="s.sqlite"):
    return main(["tune", "--storage", str(tmp_path / storage), *argv])


# ---- identity --------------------------------------------------------------------------


@pytest.mark.parametrize("changed,what", [
    (["--epochs", "2"], "epochs 2 (stored: 1)"),
    (["--seed", "5"], "seed 5 (stored: 0)"),
    (["--rounds", "2"], "rounds 2 (stored: 1)"),
    (["--data", "DATA"], "data 'mine.npz sha256:"),
])
def test_other_settings_never_show_the_old_study(changed, what, tmp_path, capsys):
    # It used to print "0 run now" and the old digits table, no warning.
    from pybn import datasets
    X, y = datasets.make_synthetic(300, 8, 3, seed=0)
    np.savez(tmp_path / "mine.npz", X=X, y=y)
    base = ["--n-trials", "2", "--rounds", "1", *QUICK]
    assert _tune(tmp_path, *base) == 0
    capsys.readouterr()
    changed = [str(tmp_path / "mine.npz") if a == "DATA" else a for a in changed]
    args = base + changed
    assert _tune(tmp_path, *args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pybn tune: error: study 'digits-bn-mlp'")
    assert what in err and "--study NEW_NAME" in err
    assert len(_rows(tmp_path / "s.sqlite", "SELECT * FROM trials")) == 2  # nothing ran
    if changed[0] != "--data":  # a flag's setting: the error says how to resume
        flag, stored = changed[0], what.split("stored: ")[1].rstrip(")")
        assert f"to resume it, pass {flag} {stored};" in err
        assert _tune(tmp_path, *args, flag, stored) == 0
        assert "0 run now" in capsys.readouterr().out
    else:
        assert "to resume it" not in err
    # a new name is a new study beside the old one; the same settings resume it
    assert _tune(tmp_path, *args, "--study", "other") == 0
    assert "2 trials" in capsys.readouterr().out
    assert _tune(tmp_path, *args, "--study", "other") == 0
    assert "0 run now" in capsys.readouterr().out
    assert sorted(get_all_study_names(tmp_path / "s.sqlite")) == ["digits-bn-mlp", "other"]


def test_settings_mismatch_from_python_names_what_changed(tmp_path):
    Study(tmp_path / "s.sqlite", name="a", settings={"epochs": 20, "data": "x"})
    Study(tmp_path / "s.sqlite", name="a", settings={"epochs": 20, "data": "x"})  # same: fine
    with pytest.raises(StudyMismatch, match=r"epochs 10 \(stored: 20\)") as info:
        Study(tmp_path / "s.sqlite", name="a", settings={"epochs": 10, "data": "x"})
    assert info.value.differences == {"epochs": (20, 10)}
    with pytest.raises(ValueError, match="seed: study 'b' began with seed 1, not 2"):
        study = Study(tmp_path / "s.sqlite", name="b")
        study.coarse_to_fine(value_of_x, SPACE, rounds=1, trials_per_round=2, seed=1)
        study.coarse_to_fine(value_of_x, SPACE, rounds=1, trials_per_round=2, seed=2)
    with pytest.raises(ValueError, match="space: study 'b' searched another space"):
        study.coarse_to_fine(value_of_x, {"x": Uniform(0, 2)}, rounds=1, trials_per_round=2, seed=1)


# ---- growing ---------------------------------------------------------------------------


def test_more_trials_grow_the_study_without_overlapping_rounds(tmp_path, capsys):
    # --n-trials 6 then 12 used to stop at 8 or 9 trials, rounds overlapping.
    assert _tune(tmp_path, "--n-trials", "6", "--rounds", "3", *QUICK) == 0
    assert _tune(tmp_path, "--n-trials", "12", "--rounds", "3", *QUICK) == 0
    out = capsys.readouterr().out
    assert "12 trials" in out and "6 run now" in out
    rounds = _rows(tmp_path / "s.sqlite", "SELECT round, n_trials, first_number FROM rounds ORDER BY round")
    assert rounds == [(0, 2, 0), (1, 2, 2), (2, 8, 4)]  # finished rounds kept, the rest to the last
    numbers = _rows(tmp_path / "s.sqlite", "SELECT number, round FROM trials ORDER BY number")
    assert [n for n, _ in numbers] == list(range(12))
    assert [r for _, r in numbers] == [0, 0, 1, 1] + [2] * 8
    # fewer than stored: nothing runs, no error
    assert _tune(tmp_path, "--n-trials", "3", "--rounds", "3", *QUICK) == 0
    assert "12 trials" in capsys.readouterr().out


def test_an_interrupted_round_grows_in_place(tmp_path):
    study = Study(tmp_path / "s.sqlite")
    study.coarse_to_fine(value_of_x, SPACE, rounds=1, trials_per_round=3, seed=0)
    study.coarse_to_fine(value_of_x, SPACE, rounds=3, trials_per_round=[5, 4, 4], seed=0)
    rounds = study.storage.rounds(study.name)
    assert [(r, n, first) for r, _, n, first in rounds] == [(0, 5, 0), (1, 4, 5), (2, 4, 9)]
    assert [t.number for t in study.trials] == list(range(13))


# ---- failures --------------------------------------------------------------------------


@pytest.mark.parametrize("make,message", [
    (None, "does not exist"),
    (dict(X=np.ones(5), y=np.zeros(5, int)), "X must be a 2-D numeric array"),
    (dict(X=np.ones((6, 0)), y=np.arange(6) % 2), "with at least one feature, got shape (6, 0)"),
    (dict(X=np.ones((5, 2)), y=np.zeros(5)), "y must be integer labels"),
    (dict(X=np.ones((5, 2)), y=np.zeros(4, int)), "y must be integer labels of shape (5,)"),
    (dict(X=np.ones((5, 2)), y=np.zeros(5, int)), "at least 2 are needed"),
    (dict(X=np.ones((6, 2)), y=np.arange(6) % 2), "6 examples of 2 classes are too few to split"),
    (dict(X=np.full((6, 2), np.nan), y=np.arange(6) % 2), "NaN or inf"),
    (dict(X=np.ones((6, 2))), "lacks arrays ['y']"),
])
def test_bad_data_is_refused_before_any_trial(make, message, tmp_path, capsys):
    path = tmp_path / "typo.npz"
    if make is not None:
        np.savez(path, **make)
    assert _tune(tmp_path, "--data", str(path), "--n-trials", "2", "--rounds", "1", *QUICK) == 2
    err = capsys.readouterr().err
    assert err.startswith("pybn tune: error: --data: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "s.sqlite").exists()  # no study, no failed trials stored


def test_failed_trials_keep_their_traceback_and_retry_on_request(tmp_path):
    study = Study(tmp_path / "s.sqlite").optimize(raises_value_error, SPACE, 3, seed=0)
    trial = study.trials[0]
    assert trial.state == "failed"
    assert "Traceback (most recent call last)" in trial.error
    assert "raises_value_error" in trial.error and trial.error.endswith(f"ValueError: bad x {trial.params['x']:.3f}")
    study.optimize(value_of_x, SPACE, 3, seed=0)  # not retried unless asked
    assert [t.state for t in study.trials] == ["failed"] * 3
    study.optimize(value_of_x, SPACE, 3, seed=0, retry_failed=True)
    assert [t.state for t in study.trials] == ["complete"] * 3
    assert [t.value for t in study.trials] == [t.params["x"] for t in study.trials]


class _CancelsFirstSubmissions(cf.ThreadPoolExecutor):
    """An executor whose infrastructure loses the first `lose` tasks (they
    come back cancelled), as a Dask cluster that loses a worker does."""

    def __init__(self, lose):
        super().__init__(1)
        self.lose = lose

    def submit(self, fn, *args, **kwargs):
        if self.lose > 0:
            self.lose -= 1
            future = cf.Future()
            future.cancel()
            future.set_running_or_notify_cancel()
            return future
        return super().submit(fn, *args, **kwargs)


def test_infrastructure_losses_are_rerun_not_stored_as_failed(tmp_path):
    with _CancelsFirstSubmissions(lose=2) as pool:  # lost twice, then it runs
        study = Study(tmp_path / "s.sqlite").optimize(value_of_x, SPACE, 3, executor=pool, seed=0)
    assert [t.state for t in study.trials] == ["complete"] * 3
    # lost every time within a run: left unfinished, and a resume runs it
    with _CancelsFirstSubmissions(lose=execution.INFRASTRUCTURE_ATTEMPTS) as pool:
        study = Study(tmp_path / "t.sqlite").optimize(value_of_x, SPACE, 2, executor=pool, seed=0)
    assert [t.state for t in study.trials] == ["running", "complete"]
    study.optimize(value_of_x, SPACE, 2, seed=0)
    assert [t.state for t in study.trials] == ["complete", "complete"]


@pytest.mark.parametrize("n_workers,in_process", [(2, None), (1, False)])
def test_objectives_that_exit_fail_their_trial_never_the_study(n_workers, in_process):
    # os._exit, SystemExit and KeyboardInterrupt in an objective used to end
    # the coordinator, and every resume ended the same way.
    study = Study().optimize(exits_for_large_x, SPACE, 12, n_workers=n_workers, in_process=in_process,
                             seed=4)
    by_kind = {}
    for t in study.trials:
        x = t.params["x"]
        kind = "exit" if x > 0.85 else "system" if x > 0.75 else "keyboard" if x > 0.6 else "ok"
        by_kind.setdefault(kind, []).append(t)
    assert set(by_kind) == {"exit", "system", "keyboard", "ok"}, "seed 4 should draw every kind"
    assert all(t.state == "failed" and "worker process died" in t.error for t in by_kind["exit"])
    assert all(t.state == "failed" and "SystemExit: objective called sys.exit" in t.error for t in by_kind["system"])
    assert all(t.state == "failed" and "KeyboardInterrupt" in t.error for t in by_kind["keyboard"])
    assert all(t.state == "complete" for t in by_kind["ok"])


def test_system_exit_in_process_fails_the_trial():
    def leaves(params):
        raise SystemExit(4)
    study = Study().optimize(leaves, SPACE, 2, seed=0)
    assert [t.state for t in study.trials] == ["failed", "failed"]
    assert "SystemExit: 4" in study.trials[0].error


def test_a_trial_past_its_timeout_fails_and_the_others_go_on():
    start = time.monotonic()
    study = Study().optimize(sleeps_for_large_x, SPACE, 8, n_workers=2, timeout=3, seed=3)
    assert time.monotonic() - start < 50  # the 60 s sleepers were stopped
    slow = [t for t in study.trials if t.params["x"] > 0.7]
    assert slow and all(t.state == "failed" and "timed out after 3 s" in t.error for t in slow)
    assert all(t.state == "complete" for t in study.trials if t.params["x"] <= 0.7)
    with pytest.raises(ValueError, match="timeout: needs worker processes"):
        Study().optimize(value_of_x, SPACE, 1, timeout=1, in_process=True)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="max_tasks_per_child needs Python 3.11")
def test_workers_are_recycled_after_max_tasks_per_child():
    study = Study().optimize(report_pid, SPACE, 6, n_workers=1, in_process=False, max_tasks_per_child=2,
                             seed=0)
    pids = [t.value for t in study.trials]
    assert len(set(pids)) == 3 and pids[0] == pids[1] and pids[2] == pids[3] and pids[0] != pids[2]


# ---- real processes: the coordinator, its workers, a Dask scheduler -------------------------


def _children(pid):
    """Pids of the direct children of `pid` (Linux /proc); threads and
    children may come and go while it reads."""
    out = []
    try:
        tasks = list(pathlib.Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return out
    for task in tasks:
        try:
            out += [int(p) for p in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return out


def _cmdline(pid):
    try:
        return pathlib.Path(f"/proc/{pid}/cmdline").read_text()
    except FileNotFoundError:
        return ""


def _alive(pid):
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs Linux /proc")
def test_workers_exit_when_their_coordinator_is_killed(tmp_path):
    # They used to live on (130 MB each), running trials nobody would record.
    code = ("import time, sys\n"
            "from pybn.tune import Study, Uniform\n"
            "def slow(p):\n"
            "    time.sleep(30)\n"
            "    return p['x']\n"
            "if __name__ == '__main__':\n"
            f"    Study({str(tmp_path / 's.sqlite')!r}).optimize(slow, {{'x': Uniform(0, 1)}}, 4, n_workers=2, seed=0)\n")
    script = tmp_path / "coordinator.py"
    script.write_text(code)
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        workers = []
        while time.monotonic() < deadline and len(workers) < 2:
            time.sleep(0.5)
            # the pool's workers (the resource tracker is another child)
            workers = [p for p in _children(proc.pid) if "spawn_main" in _cmdline(p)]
        assert len(workers) >= 2, "the pool did not start"
        everyone = _children(proc.pid)
        proc.kill()
        proc.wait(10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(p) for p in everyone):
            time.sleep(0.2)
        assert not [p for p in everyone if _alive(p)], "processes outlived their coordinator"
    finally:
        proc.kill()
    states = _rows(tmp_path / "s.sqlite", "SELECT state FROM trials")
    assert states and all(s == ("running",) for s in states)  # resumable


def _complete(storage):
    """Complete trials so far (0 while the coordinator is still creating the file)."""
    try:
        return _rows(storage, "SELECT COUNT(*) FROM trials WHERE state = 'complete'")[0][0]
    except sqlite3.OperationalError:  # no file or no table yet
        return 0


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_killed_dask_scheduler_ends_the_run_in_bounded_time_and_resumes(tmp_path):
    pytest.importorskip("distributed")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host",
                                  "127.0.0.1", "--port", str(port), "--no-dashboard"], **quiet)
    worker = None
    try:
        time.sleep(3)
        worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address,
                                   "--nthreads", "1", "--nworkers", "2", "--no-dashboard"], **quiet)
        storage = tmp_path / "s.sqlite"
        argv = ["--storage", str(storage), "--epochs", "30", "--n-trials", "60", "--rounds", "1",
                "--no-progress"]
        tune = subprocess.Popen([sys.executable, "-m", "pybn", "tune", "--dask", address, *argv],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if _complete(storage) >= 2:
                break
        assert tune.poll() is None, tune.communicate()
        scheduler.kill()
        killed = time.monotonic()
        out, err = tune.communicate(timeout=120)
        assert time.monotonic() - killed < 60, "the run did not end in bounded time"
        assert tune.returncode == 1, (out, err)
        # one line, nothing else: no traceback or error logged by Dask or
        # tornado (which came through 1 run in 4 when only the "distributed"
        # logger was silenced)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("pybn tune: interrupted: the Dask scheduler at"), err
        assert "resume" in lines[0]
    finally:
        scheduler.kill()
        if worker is not None:
            worker.kill()
    # resume on the local pool: every trial ends, none failed
    assert main(["tune", *argv, "--workers", "2"]) == 0
    states = dict(_rows(storage, "SELECT state, COUNT(*) FROM trials GROUP BY state"))
    assert set(states) <= {"complete", "pruned"} and sum(states.values()) == 60, states


# ---- storage ---------------------------------------------------------------------------


def test_a_symlinked_database_has_one_lock(tmp_path):
    # Two coordinators reached one database through a symlink: two lock
    # files, trial 0 ran twice.
    real = tmp_path / "real.sqlite"
    Study(real)
    link = tmp_path / "link.sqlite"
    link.symlink_to(real)
    first = SQLiteStorage(str(real))
    second = SQLiteStorage(str(link))
    with first.coordinator_lock():
        with pytest.raises(RuntimeError, match="being run by another coordinator"):
            with second.coordinator_lock():
                pass


def test_a_lock_file_that_is_a_symlink_is_never_followed(tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("do not truncate")
    (tmp_path / "s.sqlite.lock").symlink_to(victim)
    with pytest.raises(ValueError, match="is a symbolic link"):
        Study(tmp_path / "s.sqlite").optimize(value_of_x, SPACE, 1)
    assert victim.read_text() == "do not truncate"


def test_storage_argument_is_validated(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TypeError, match="storage: expected a file path, a SQLiteStorage or None, got int"):
        Study(3)
    with pytest.raises(ValueError, match="storage: expected a file path, got an empty string"):
        Study("")
    assert not (tmp_path / "3").exists()
    assert _tune(tmp_path, "--n-trials", "1", "--rounds", "1", *QUICK, storage="") == 2
    assert "--storage: " in capsys.readouterr().err
    assert main(["tune", "--storage", "", "--n-trials", "1", "--rounds", "1", *QUICK]) == 2
    assert capsys.readouterr().err == "pybn tune: error: --storage: expected a file name, got an empty string\n"


def test_study_path_alone_opens_the_only_study(tmp_path):
    # After the CLI ran, Study(path) silently created an empty "default".
    path = tmp_path / "s.sqlite"
    assert _tune(tmp_path, "--n-trials", "2", "--rounds", "1", *QUICK) == 0
    study = Study(path)
    assert study.name == "digits-bn-mlp" and len(study.trials) == 2
    assert get_all_study_names(path) == ["digits-bn-mlp"]
    assert study.best_value == max(t.value for t in study.trials if t.state == "complete")
    assert set(study.best_params) == set(study.trials[0].params)
    Study(path, name="second")
    with pytest.raises(ValueError, match=r"holds 2 studies \('digits-bn-mlp', 'second'\): say which"):
        Study(path)
    assert Study(tmp_path / "new.sqlite").name == "default"


def test_trials_export_to_csv_and_dataframe(tmp_path):
    study = Study().optimize(value_of_x, SPACE, 3, seed=0)
    path = study.to_csv(tmp_path / "trials.csv")
    import csv
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["number"]) for r in rows] == [0, 1, 2]
    assert [float(r["value"]) for r in rows] == [t.value for t in study.trials]
    assert "params_x" in rows[0] and rows[0]["state"] == "complete"
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="trials_dataframe needs pandas"):
            study.trials_dataframe()
    else:
        assert list(study.trials_dataframe()["number"]) == [0, 1, 2]


def test_schema_version_is_stored_old_files_upgrade_newer_are_refused(tmp_path):
    path = tmp_path / "s.sqlite"
    Study(path).optimize(value_of_x, SPACE, 1, seed=0)
    assert _rows(path, "PRAGMA user_version") == [(1,)]
    # a file of the first schema (no settings column, version 0) upgrades in place
    old = tmp_path / "old.sqlite"
    with sqlite3.connect(old) as conn:
        conn.executescript(
            "CREATE TABLE studies (name TEXT PRIMARY KEY, direction TEXT NOT NULL, created REAL NOT NULL);"
            "INSERT INTO studies VALUES ('default', 'maximize', 0);")
    study = Study(old, settings={"epochs": 3})
    assert study.settings == {"epochs": 3} and _rows(old, "PRAGMA user_version") == [(1,)]
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 7")
    with pytest.raises(ValueError, match=r"written by a newer pybn \(schema version 7; this pybn reads up to 1\)"):
        Study(path)


def test_compare_batchnorm_with_another_seed_is_refused_not_mixed(tmp_path, capsys):
    # Killed and re-run with another seed, the comparison counted 16 trials
    # against 10, with trials stuck running.
    argv = ["--compare-batchnorm", "--n-trials", "2", *QUICK]
    assert _tune(tmp_path, *argv) == 0
    capsys.readouterr()
    assert _tune(tmp_path, *argv, "--seed", "5") == 2
    assert "seed 5 (stored: 0)" in capsys.readouterr().err


def test_a_new_random_round_first_finishes_the_interrupted_one(tmp_path):
    path = tmp_path / "s.sqlite"
    study = Study(path).optimize(value_of_x, SPACE, 3, seed=1)
    with sqlite3.connect(path) as conn:  # as if killed while trial 2 ran
        conn.execute("UPDATE trials SET state = 'running', value = NULL WHERE number = 2")
    study.optimize(value_of_x, SPACE, 2, seed=2)
    assert [t.state for t in study.trials] == ["complete"] * 5
    assert [t.round for t in study.trials] == [0, 0, 0, 1, 1]


def test_the_search_engine_imports_nothing_of_the_training_stack():
    # tune/study.py, execution.py, spaces.py, storage.py, samplers.py and
    # pruners.py: the thread setting and the "diverged" signal are passed in.
    import pybn.tune as package
    folder = pathlib.Path(package.__file__).parent
    engine = ("spaces", "storage", "study", "execution", "samplers", "pruners")
    for name in (f"{module}.py" for module in engine):
        tree = ast.parse((folder / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                assert node.level == 1 and node.module in engine, \
                    (name, node.module, node.level)
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("pybn") for a in node.names), (name, ast.dump(node))


def test_json_settings_survive_a_round_trip(tmp_path):
    settings = {"space": {"x": {"kind": "uniform", "low": 0.0, "high": 1.0}}, "fixed": {"layers": 3},
                "tuple": [1, 2]}
    Study(tmp_path / "s.sqlite", settings=settings)
    assert Study(tmp_path / "s.sqlite", settings=json.loads(json.dumps(settings))).settings == settings
