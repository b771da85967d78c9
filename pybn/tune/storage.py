"""Where a study's trials live: a SQLite file (or memory), written only by
the coordinating process.

Every write is one transaction, committed before the call returns, so a
SIGKILL at any point leaves each trial either as it was or fully updated.
A trial is inserted as "running" before its objective starts and updated
once when it ends; reopening the file shows interrupted trials still
"running", to be re-run with their stored number and parameters. All SQL
uses parameters; values are JSON, never pickles.
"""
import json
import math
import os
import sqlite3
import time

_SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    name TEXT PRIMARY KEY,
    direction TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rounds (
    study TEXT NOT NULL,
    round INTEGER NOT NULL,
    region TEXT NOT NULL,          -- JSON: the space sampled in this round and its seed
    n_trials INTEGER NOT NULL,
    first_number INTEGER NOT NULL,
    PRIMARY KEY (study, round)
);
CREATE TABLE IF NOT EXISTS trials (
    study TEXT NOT NULL,
    number INTEGER NOT NULL,
    round INTEGER NOT NULL,
    params TEXT NOT NULL,          -- JSON
    seed INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('running', 'complete', 'failed', 'pruned')),
    value REAL,
    error TEXT,
    intermediate TEXT NOT NULL DEFAULT '[]',  -- JSON list of per-epoch scores
    started REAL,
    finished REAL,
    PRIMARY KEY (study, number)
);
"""


def _json_float(value):
    """SQLite stores NaN as NULL; keep None for 'no value'."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class SQLiteStorage:
    """Trials of one or more studies in a SQLite database (":memory:" for a
    throwaway study)."""

    def __init__(self, path=":memory:"):
        self.path = str(path)
        if self.path != ":memory:":
            directory = os.path.dirname(os.path.abspath(self.path))
            if not os.path.isdir(directory):
                raise ValueError(f"storage: directory {directory} does not exist")
        try:
            self._conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL" if self.path != ":memory:" else "PRAGMA journal_mode=MEMORY")
            self._conn.execute("PRAGMA synchronous=FULL")
            with self._transaction():
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    self._conn.execute(statement)
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"storage: {self.path} is not a usable pybn study database ({exc})") from exc

    def _transaction(self):
        return _Transaction(self._conn)

    def close(self):
        self._conn.close()

    # ---- studies -----------------------------------------------------------------

    def get_or_create_study(self, name, direction):
        """The study's stored direction, creating the study if new."""
        with self._transaction():
            row = self._conn.execute("SELECT direction FROM studies WHERE name = ?", (name,)).fetchone()
            if row is None:
                self._conn.execute("INSERT INTO studies (name, direction, created) VALUES (?, ?, ?)",
                                   (name, direction, time.time()))
                return direction
        return row[0]

    # ---- rounds ------------------------------------------------------------------

    def get_round(self, study, round_):
        row = self._conn.execute(
            "SELECT region, n_trials, first_number FROM rounds WHERE study = ? AND round = ?",
            (study, round_)).fetchone()
        return None if row is None else (json.loads(row[0]), row[1], row[2])

    def put_round(self, study, round_, region, n_trials, first_number):
        with self._transaction():
            self._conn.execute(
                "INSERT OR REPLACE INTO rounds (study, round, region, n_trials, first_number) "
                "VALUES (?, ?, ?, ?, ?)", (study, round_, json.dumps(region), n_trials, first_number))

    def max_round(self, study):
        row = self._conn.execute("SELECT MAX(round) FROM rounds WHERE study = ?", (study,)).fetchone()
        return -1 if row[0] is None else row[0]

    # ---- trials ------------------------------------------------------------------

    def start_trial(self, study, number, round_, params, seed):
        """Record trial `number` as running (inserting it, or restarting an
        interrupted one with its stored parameters)."""
        with self._transaction():
            self._conn.execute(
                "INSERT INTO trials (study, number, round, params, seed, state, started) "
                "VALUES (?, ?, ?, ?, ?, 'running', ?) "
                "ON CONFLICT (study, number) DO UPDATE SET state = 'running', started = excluded.started",
                (study, number, round_, json.dumps(params), int(seed), time.time()))

    def finish_trial(self, study, number, state, value, error, intermediate):
        with self._transaction():
            cur = self._conn.execute(
                "UPDATE trials SET state = ?, value = ?, error = ?, intermediate = ?, finished = ? "
                "WHERE study = ? AND number = ? AND state = 'running'",
                (state, _json_float(value), error, json.dumps([_json_float(v) for v in intermediate]),
                 time.time(), study, number))
            if cur.rowcount != 1:
                raise RuntimeError(f"storage: trial {number} of study {study!r} was not running")

    def trials(self, study):
        rows = self._conn.execute(
            "SELECT number, round, params, seed, state, value, error, intermediate, started, finished "
            "FROM trials WHERE study = ? ORDER BY number", (study,)).fetchall()
        return [dict(number=r[0], round=r[1], params=json.loads(r[2]), seed=r[3], state=r[4],
                     value=r[5], error=r[6], intermediate=json.loads(r[7]), started=r[8], finished=r[9])
                for r in rows]


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception."""

    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb):
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
        return False
