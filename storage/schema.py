"""The tables of a spela-stream database, and opening one safely.

Plain tables, readable with the ``sqlite3`` shell: JSON lives in TEXT columns (``json_extract``
works on them), arrays in BLOBs of little-endian bytes. ``meta`` holds the schema version; a
file without it is somebody else's database and is left untouched.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlite_utils import Database

from spela_stream.errors import CheckpointError

SCHEMA = "spela-stream.store/1"
_PREFIX, _VERSION = SCHEMA.rsplit("/", 1)
BUSY_TIMEOUT_S = 10.0  # a writer waits this long for another writer's checkpoint to commit
# 64 KiB pages: a 3 MiB weight matrix is a chain of 48 overflow pages rather than 800. Only
# takes effect when the file is created.
PAGE_SIZE = 65536
# The WAL is checkpointed into the file every 1000 pages (64 MiB); past that, shrink it back.
WAL_LIMIT = 64 * 2**20
TABLES = frozenset({"meta", "runs", "checkpoints", "tensors", "history"})

# Written out in SQL rather than through Table.create(): ON DELETE CASCADE, the compound key
# and the comments are then visible as they are in `sqlite3 runs.db .schema`.
DDL = f"""
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    name TEXT PRIMARY KEY,
    config TEXT NOT NULL,           -- JSON: the hyper-parameters the run was created with
    source TEXT NOT NULL,           -- the source spec the run was created with
    created TEXT NOT NULL,          -- ISO 8601, UTC
    updated TEXT NOT NULL,          -- time of the latest checkpoint
    samples INTEGER NOT NULL DEFAULT 0,
    summary TEXT                    -- JSON: the latest metrics summary, or NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused, so newer is larger
    run TEXT NOT NULL REFERENCES runs(name) ON DELETE CASCADE,
    samples INTEGER NOT NULL,
    source TEXT NOT NULL,
    position INTEGER NOT NULL,      -- records consumed from the source
    "where" TEXT NOT NULL,          -- the position in words: "data.csv line 1001"
    created TEXT NOT NULL,
    state TEXT NOT NULL,            -- JSON: every value of the state that is not an array
    metrics TEXT,                   -- JSON: metric state, or NULL
    bytes INTEGER NOT NULL          -- tensor bytes + JSON bytes
);
CREATE INDEX IF NOT EXISTS checkpoints_run ON checkpoints(run, id);
CREATE TABLE IF NOT EXISTS tensors (
    checkpoint INTEGER NOT NULL REFERENCES checkpoints(id) ON DELETE CASCADE,
    name TEXT NOT NULL,             -- the state key, e.g. 'layers.0.weight'
    dtype TEXT NOT NULL,            -- numpy's little-endian spelling, e.g. '<f4'
    shape TEXT NOT NULL,            -- JSON list; [] for a 0-d array
    data BLOB NOT NULL,             -- C-order little-endian bytes
    checksum TEXT NOT NULL,         -- sha256 of data, hex
    PRIMARY KEY (checkpoint, name)
);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY,
    run TEXT NOT NULL REFERENCES runs(name) ON DELETE CASCADE,
    samples INTEGER NOT NULL,
    kind TEXT NOT NULL,             -- 'report' unless the row says otherwise
    data TEXT NOT NULL              -- JSON: the row as given
);
CREATE INDEX IF NOT EXISTS history_run ON history(run, samples);
INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', '{SCHEMA}');
COMMIT;
"""


def _not_ours(label: str, why: str) -> CheckpointError:
    return CheckpointError(f"{label} is not a spela-stream database ({why}; use another --db)")


def _check_schema(db: Database, label: str, tables: set[str]) -> None:
    """Raise CheckpointError unless the tables are ours and of a version this code reads."""
    if "meta" not in tables:
        names = ", ".join(sorted(tables)[:5])
        raise _not_ours(label, f"it has tables {names} but no spela-stream schema")
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    except sqlite3.Error:
        row = None
    value = row[0] if row else None
    if not isinstance(value, str) or not value.startswith(_PREFIX + "/"):
        raise _not_ours(label, f"its meta table names no spela-stream schema ({value!r})")
    version = value.removeprefix(_PREFIX + "/")
    if version != _VERSION:
        newer = version.isdigit() and int(version) > int(_VERSION)
        raise CheckpointError(
            f"{label} holds schema {value}, but this spela-stream reads {SCHEMA}"
            + (" (it was written by a newer spela-stream: upgrade)" if newer else "")
        )


def open_database(path: str | Path, *, create: bool) -> Database:
    """Open (and, if ``create``, set up) a spela-stream database; CheckpointError otherwise."""
    label = str(path)
    file = Path(path)
    if not create and not file.exists():
        raise CheckpointError(f"{label}: no such database (learn with --db {label} first)")
    if not file.parent.is_dir():
        raise CheckpointError(f"{label}: the folder {file.parent} does not exist")
    if file.is_dir():
        raise CheckpointError(f"{label} is a directory, not a spela-stream database")
    conn: sqlite3.Connection | None = None
    try:
        conn = sqlite3.connect(label, timeout=BUSY_TIMEOUT_S)
        db = Database(conn, recursive_triggers=False, execute_plugins=False)
        try:
            tables = set(db.table_names())  # the first read: fails on a file that is not SQLite
        except sqlite3.DatabaseError as exc:
            raise _not_ours(label, f"not an SQLite file: {exc}") from None
        if tables:
            _check_schema(db, label, tables)  # before any write: a foreign file stays as it was
        elif not create:
            raise _not_ours(label, "it has no tables")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = FULL")  # in WAL: fsync at every commit
        conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT}")
        if not tables:
            conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        db.enable_wal()  # readers see the last commit while a checkpoint is written
        if create and not TABLES <= tables:
            try:
                conn.executescript(DDL)
            except BaseException:
                if conn.in_transaction:
                    conn.rollback()
                raise
            _check_schema(db, label, set(db.table_names()))  # another process may have won
        return db
    except CheckpointError:
        if conn is not None:
            conn.close()
        raise
    except sqlite3.Error as exc:
        if conn is not None:
            conn.close()
        raise CheckpointError(f"{label}: cannot open the database ({exc})") from None
