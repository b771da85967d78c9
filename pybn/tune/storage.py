"""Where a study's trials live: a SQLite file (or memory), written only by
the coordinating process.

Every write is one transaction, committed before the call returns, so a
SIGKILL at any point leaves each trial either as it was or fully updated.
A trial is inserted as "running" before its objective starts and updated
once when it ends; reopening the file shows interrupted trials still
"running", to be re-run with their stored number and parameters. All SQL
uses parameters; values are JSON, never pickles.

The schema carries a version (PRAGMA user_version): files of the first
pybn schema (version 0) are upgraded in place, files of a newer pybn are
refused. Each study stores the settings that define it (data fingerprint,
objective settings, space, seed, rounds), so that a run with other settings
is never shown as the stored one.
"""
import contextlib
import json
import math
import os
import sqlite3
import time

try:
    import fcntl
except ImportError:  # not on Windows: there the lock is not taken
    fcntl = None

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    name TEXT PRIMARY KEY,
    direction TEXT NOT NULL,
    created REAL NOT NULL,
    settings TEXT                  -- JSON: what defines the study, or NULL
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
    error TEXT,                    -- a failed trial's message and traceback
    intermediate TEXT NOT NULL DEFAULT '[]',  -- JSON list of per-epoch scores
    started REAL,
    finished REAL,
    PRIMARY KEY (study, number)
);
"""


# What each table must have (table names are constants, never user input).
_COLUMNS = {
    "studies": {"name", "direction", "created", "settings"},
    "rounds": {"study", "round", "region", "n_trials", "first_number"},
    "trials": {"study", "number", "round", "params", "seed", "state", "value", "error",
               "intermediate", "started", "finished"},
}


class StorageLocked(RuntimeError):
    """Another process is running this storage's trials."""


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
        uri = self.path.startswith("file:")  # SQLite URI, e.g. "file:study.sqlite?mode=ro"
        if self.path != ":memory:" and not uri:
            directory = os.path.dirname(os.path.abspath(self.path))
            if not os.path.isdir(directory):
                raise ValueError(f"storage: directory {directory} does not exist")
            if os.path.isdir(self.path):  # SQLite would only say "unable to open database file"
                raise ValueError(f"storage: {self.path} is a folder; expected a SQLite file in it")
        try:
            self._conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, uri=uri)
            self._conn.execute("PRAGMA journal_mode=WAL" if self.path != ":memory:" else "PRAGMA journal_mode=MEMORY")
            self._conn.execute("PRAGMA synchronous=FULL")
            with self._transaction():
                version = self._conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise ValueError(f"storage: {self.path} was written by a newer pybn (schema version "
                                     f"{version}; this pybn reads up to {SCHEMA_VERSION}): upgrade pybn")
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    self._conn.execute(statement)
                self._check_schema(added_since_0={"settings"})  # a foreign file is left as it was
                if version < SCHEMA_VERSION:
                    self._upgrade()
            self._check_schema()
        except sqlite3.DatabaseError as exc:
            if "readonly" in str(exc):
                raise ValueError(f"storage: {self.path} is read-only; a study needs to write every "
                                 "trial (copy it somewhere writable)") from exc
            raise ValueError(f"storage: {self.path} is not a usable pybn study database ({exc})") from exc

    def _transaction(self):
        return _Transaction(self._conn)

    def _upgrade(self):
        """From the first schema (version 0, no settings column) to this one."""
        have = {row[1] for row in self._conn.execute("PRAGMA table_info(studies)")}
        if "settings" not in have:
            self._conn.execute("ALTER TABLE studies ADD COLUMN settings TEXT")
        self._conn.execute(f"PRAGMA user_version = {int(SCHEMA_VERSION)}")

    def _check_schema(self, added_since_0=frozenset()):
        for table, columns in _COLUMNS.items():
            have = {row[1] for row in self._conn.execute(f"PRAGMA table_info({table})")}
            missing = columns - have - set(added_since_0)
            if missing:
                raise ValueError(f"storage: {self.path} has a {table!r} table without columns "
                                 f"{sorted(missing)}: not a pybn study database")

    def close(self):
        self._conn.close()

    @contextlib.contextmanager
    def coordinator_lock(self):
        """Held while a process runs trials of this storage: a second
        coordinator fails at once instead of running the same trials. The OS
        releases it when its holder dies, SIGKILL included."""
        if self.path == ":memory:" or fcntl is None:
            yield
            return
        db_path = self.path[5:].split("?", 1)[0] if self.path.startswith("file:") else self.path
        # The lock belongs to the database file itself, whatever path (a
        # symlink, a relative path) reached it; and the lock file is never
        # followed if it is a link (opening it truncates what it points to).
        lock_path = os.path.realpath(db_path) + ".lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as exc:
            if os.path.islink(lock_path):
                raise ValueError(f"storage: the lock file {lock_path} is a symbolic link; pybn never "
                                 "follows it (remove it if no study is running)") from None
            raise ValueError(f"storage: cannot create the lock file {lock_path}: {exc.strerror}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                raise StorageLocked(f"storage: {self.path} is being run by another coordinator "
                                   f"(pid {holder}); one process runs a study's trials at a time, "
                                   "start more workers instead") from None
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    # ---- studies -----------------------------------------------------------------

    def get_or_create_study(self, name, direction, settings=None):
        """(direction, settings) of the stored study, creating it with these if
        new. A study stored without settings adopts the ones given."""
        with self._transaction():
            row = self._conn.execute("SELECT direction, settings FROM studies WHERE name = ?",
                                     (name,)).fetchone()
            encoded = None if settings is None else json.dumps(settings, sort_keys=True)
            if row is None:
                self._conn.execute("INSERT INTO studies (name, direction, created, settings) "
                                   "VALUES (?, ?, ?, ?)", (name, direction, time.time(), encoded))
                return direction, settings
            if row[1] is None and encoded is not None:
                self._conn.execute("UPDATE studies SET settings = ? WHERE name = ?", (encoded, name))
                return row[0], settings
        return row[0], None if row[1] is None else json.loads(row[1])

    def study_names(self):
        """Every study in this storage, oldest first."""
        return [r[0] for r in self._conn.execute("SELECT name FROM studies ORDER BY created, name")]

    def rounds(self, study):
        """[(round, region, n_trials, first_number)] of a study, in order."""
        rows = self._conn.execute("SELECT round, region, n_trials, first_number FROM rounds "
                                  "WHERE study = ? ORDER BY round", (study,)).fetchall()
        return [(r[0], json.loads(r[1]), r[2], r[3]) for r in rows]

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
