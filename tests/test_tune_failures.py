"""Tuning under failure: a worker killed mid-trial, two coordinators on one
storage, read-only and hostile storage. Every case ends with a clear message,
a consistent store and nothing lost."""
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from pybn.tune import SQLiteStorage, Study, Uniform

SPACE = {"x": Uniform(0, 1)}


def kill_own_worker(params):
    """An objective whose worker process dies (as from SIGKILL or the OOM
    killer) for x > 0.7."""
    if params["x"] > 0.7:
        os.kill(os.getpid(), signal.SIGKILL)
    return params["x"]


def test_a_worker_killed_mid_trial_fails_that_trial_only():
    study = Study().optimize(kill_own_worker, SPACE, 10, n_workers=2, seed=3)
    trials = study.trials
    assert [t.number for t in trials] == list(range(10))
    killers = [t for t in trials if t.params["x"] > 0.7]
    assert killers and len(killers) < 10
    for t in trials:
        if t.params["x"] > 0.7:
            assert t.state == "failed" and "worker process died" in t.error
        else:  # innocent trials caught in a broken pool are re-run and complete
            assert t.state == "complete" and t.value == t.params["x"]


class _PoolBrokenBetweenSubmits:
    """Stands in for the process pool: runs each trial inline, but the
    first pool reports itself broken at its second submit, as a real one
    does when a worker dies between two submissions."""
    created = 0

    def __init__(self, n_workers, max_tasks_per_child=None):
        type(self).created += 1
        self.fail_at = 2 if type(self).created == 1 else None
        self.submits = 0

    def submit(self, fn, *args):
        import concurrent.futures as cf
        from concurrent.futures.process import BrokenProcessPool
        self.submits += 1
        if self.fail_at and self.submits >= self.fail_at:  # broken for good, as a real pool
            raise BrokenProcessPool("a child process terminated abruptly")
        future = cf.Future()
        future.set_result(fn(*args))
        return future

    def shutdown(self, wait=True, cancel_futures=False):
        pass


def test_a_pool_broken_between_two_submits_loses_and_repeats_nothing(monkeypatch):
    from pybn.tune import execution
    monkeypatch.setattr(execution, "process_pool", _PoolBrokenBetweenSubmits)
    calls = []

    def objective(params):
        calls.append(params["x"])
        return params["x"]

    study = Study().optimize(objective, SPACE, 6, n_workers=2, seed=1)
    assert _PoolBrokenBetweenSubmits.created == 2  # the broken one, then a fresh one
    assert [t.state for t in study.trials] == ["complete"] * 6
    assert sorted(calls) == sorted(t.params["x"] for t in study.trials)  # each trial ran once


def _slow_study_process(path):
    code = ("import time\n"
            "from pybn.tune import Study, Uniform\n"
            "def slow(p):\n"
            "    time.sleep(0.2)\n"
            "    return p['x']\n"
            f"Study({str(path)!r}).optimize(slow, {{'x': Uniform(0, 1)}}, 200, seed=0)\n")
    return subprocess.Popen([sys.executable, "-c", code], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=path.parent)


def test_a_second_coordinator_is_refused_until_the_first_dies(tmp_path):
    path = tmp_path / "study.sqlite"
    first = _slow_study_process(path)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            lock = tmp_path / "study.sqlite.lock"
            if lock.exists() and lock.read_text().strip() == str(first.pid):
                break
            time.sleep(0.05)
        with pytest.raises(RuntimeError, match=f"being run by another coordinator \\(pid {first.pid}\\)"):
            Study(path).optimize(lambda p: p["x"], SPACE, 3, seed=0)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    # the kernel released the lock with the process: the study resumes here
    study = Study(path).optimize(lambda p: p["x"], SPACE, 5, seed=0)
    assert all(t.state == "complete" for t in study.trials[:5])
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_read_only_storage_is_a_clear_error(tmp_path):
    path = tmp_path / "s.sqlite"
    sqlite3.connect(path).close()  # an empty database file, opened read-only below
    with pytest.raises(ValueError, match="is read-only"):
        Study(f"file:{path}?mode=ro")


def test_study_names_are_data_not_sql(tmp_path):
    path = tmp_path / "s.sqlite"
    name = "x'); DROP TABLE trials; --"
    Study(path, name=name).optimize(lambda p: p["x"], SPACE, 2, seed=0)
    study = Study(path, name=name)
    assert len(study.trials) == 2
    assert len(Study(path, name="other").trials) == 0


def test_a_database_of_another_schema_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE trials (study TEXT)")  # someone else's table
    with pytest.raises(ValueError, match="has a 'trials' table without columns .* not a pybn study"):
        SQLiteStorage(path)
