"""The tables of a spela-stream database, and opening one safely.

Plain tables, readable with the ``sqlite3`` shell: JSON lives in TEXT columns (``json_extract``
works on them), arrays in BLOBs of little-endian bytes. ``meta`` holds the schema version; a
file without it is somebody else's database and is left untouched.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from pathlib import Path
from urllib.parse import quote

from sqlite_utils import Database

from spela_stream.errors import CheckpointError, DatabaseDamagedError

SCHEMA = "spela-stream.store/1"
_PREFIX, _VERSION = SCHEMA.rsplit("/", 1)
BUSY_TIMEOUT_S = 10.0  # a writer waits this long for another writer's checkpoint to commit
# 2 KiB pages, from benchmarks/write_bench.py: every commit rewrites some fifteen pages besides
# the blobs (b-tree leaves, indexes, the run's row, the freelist), so the page size sets the
# floor of what a small checkpoint writes. A ~47 KB checkpoint's commit writes 1.66x its size
# with 2 KiB pages, 2.28x with 4 KiB and 16.8x with the 64 KiB of older files; a 4.4 MB one
# 1.02x at 2 KiB as at 4 KiB. 1 KiB pages write a little less still, but saved and loaded a
# large model 1.3-1.4x slower (a rough timing). Only takes effect when the file is created;
# an older file is rewritten with these pages when opened to write (_repage).
PAGE_SIZE = 2048
# The WAL starts over after each save (the copier folds it in, walcopy.py), so it holds one
# checkpoint's pages; should a long reader hold it back, it is cut back to this size after.
WAL_LIMIT = 64 * 2**20
# An older file with other pages is rewritten with PAGE_SIZE ones (VACUUM) when opened to write,
# up to this size: past it, the one-time rewrite and its temporary copy cost more than waiting.
REPAGE_LIMIT = 256 * 2**20
_LOG = logging.getLogger("storage")
CHECKED = ("checkpoints", "runs")  # tables with a checksum column, added to older files
TABLES = frozenset({"meta", "runs", "checkpoints", "tensors", "history", "leases"})
SQLITE_MAGIC = b"SQLite format 3\x00"
MARK_SCAN = 2**20  # where to look for our schema's name in a file whose SQLite header is gone
LEASES_DDL = """CREATE TABLE IF NOT EXISTS leases (
    run TEXT PRIMARY KEY,           -- one writer per run (lease.py)
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    since TEXT NOT NULL,            -- ISO 8601, UTC
    token TEXT NOT NULL             -- tells two leases of one process apart
)"""

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
    summary TEXT,                   -- JSON: the latest metrics summary (NULL before any)
    checksum TEXT                   -- sha256 over name config source created (integrity.py);
                                    -- NULL in a run created before checksums existed
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
    bytes INTEGER NOT NULL,         -- tensor bytes + JSON bytes
    checksum TEXT                   -- sha256 over the row and its tensors' sha256s (codec.py);
                                    -- NULL in a checkpoint saved before checksums existed
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
{LEASES_DDL};
INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', '{SCHEMA}');
COMMIT;
"""


def _not_ours(label: str, why: str) -> CheckpointError:
    return CheckpointError(f"{label} is not a spela-stream database ({why}; use another --db)")


def verify_hint(label: str) -> str:
    """What to do about damage in the database ``label``."""
    return (
        f"run `spela-stream checkpoints verify --db {label}` to see what is intact, or restore "
        "the file from a copy"
    )


def damaged(label: str, why: str) -> DatabaseDamagedError:
    """The error for a database of ours that SQLite cannot read: say so, and how to recover."""
    return DatabaseDamagedError(f"{label} is damaged ({why}): {verify_hint(label)}", why)


def describe(exc: sqlite3.Error) -> str:
    """SQLite's message, without the raw bytes a garbled text column would put in it."""
    text = str(exc)
    if text.startswith("Could not decode to UTF-8"):
        return text.split(" with text ")[0] + " (its bytes are not text)"
    return text


def _ours(file: Path) -> bool:
    """Whether the file is an SQLite file, or holds our schema's name: then it is damage."""
    try:
        with file.open("rb") as f:
            head = f.read(MARK_SCAN)
    except OSError:
        return False
    return head.startswith(SQLITE_MAGIC) or _PREFIX.encode() + b"/" in head


def _check_schema(db: Database, label: str, tables: set[str]) -> None:
    """Raise CheckpointError unless the tables are ours and of a version this code reads."""
    if "meta" not in tables:
        names = ", ".join(sorted(tables)[:5])
        raise _not_ours(label, f"it has tables {names} but no spela-stream schema")
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    except sqlite3.OperationalError:  # no such column: a meta table of somebody else's
        row = None
    except sqlite3.DatabaseError as exc:
        raise damaged(label, f"its meta table cannot be read: {describe(exc)}") from None
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


def _migrate(conn: sqlite3.Connection, tables: set[str]) -> None:
    """Bring a schema-1 file written before checksums and leases up to date, in place.

    The changes only add (NULL-able columns, a table), so older spela-streams still read the
    file: the schema version stays 1. Runs and checkpoints saved before have a NULL checksum
    and are taken as they are (checkpoints reported as unchecked), not called damaged.
    """

    def missing() -> list[str]:
        columns = {t: {r[1] for r in conn.execute(f"PRAGMA table_info({t})")} for t in CHECKED}
        return [t for t, names in columns.items() if "checksum" not in names]

    if not missing() and "leases" in tables:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table in missing():
            conn.execute(f"ALTER TABLE {table} ADD COLUMN checksum TEXT")
        conn.execute(LEASES_DDL)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise


def _repage(conn: sqlite3.Connection, file: Path, label: str) -> None:
    """Rewrite a file made with other pages (64 KiB, before) with PAGE_SIZE ones, once.

    VACUUM only runs out of WAL, which needs every other connection gone: with one there, or
    should anything fail (a full disk), the file stays as it is and the next writer tries
    again. The rewrite is a transaction of its own, with a rollback journal: a crash in it
    leaves the file as it was.
    """
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    if size == PAGE_SIZE or file.stat().st_size > REPAGE_LIMIT:
        return
    conn.execute("PRAGMA busy_timeout = 100")  # another process there: do not wait on it
    try:
        if conn.execute("PRAGMA journal_mode = DELETE").fetchone()[0] != "delete":
            return
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        conn.execute("VACUUM")
        _LOG.info("%s: rewritten with %d-byte pages (it had %d)", label, PAGE_SIZE, size)
    except sqlite3.Error as exc:
        _LOG.info("%s: keeps its %d-byte pages for now (%s)", label, size, describe(exc))
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("PRAGMA journal_mode = WAL").fetchall()
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")


def _connect(file: Path, readonly: bool, immutable: bool = False) -> sqlite3.Connection:
    if not readonly:
        return sqlite3.connect(str(file), timeout=BUSY_TIMEOUT_S)
    # mode=ro: SQLite itself refuses every write. immutable=1 also skips the locks and the WAL
    # index, which a read-only folder cannot hold; only for media nobody can write to.
    query = "mode=ro" + ("&immutable=1" if immutable else "")
    uri = f"file:{quote(str(file.resolve()))}?{query}"
    return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S)


def _cannot_write(exc: sqlite3.Error) -> bool:
    """SQLite could not open or set up the WAL index: a folder or file it may not write."""
    text = str(exc)
    return isinstance(exc, sqlite3.OperationalError) and (
        "unable to open" in text or "readonly" in text
    )


def _first_read(conn: sqlite3.Connection, db: Database, label: str, file: Path) -> set[str]:
    try:
        return set(db.table_names())  # fails on a file that is not SQLite, or is damaged
    except sqlite3.DatabaseError as exc:
        if _cannot_write(exc):
            raise  # the caller may retry read-only media with immutable=1
        if _ours(file):
            raise damaged(label, describe(exc)) from None
        raise _not_ours(label, f"not an SQLite file: {describe(exc)}") from None


def open_database(path: str | Path, *, create: bool, readonly: bool = False) -> Database:
    """Open (and, if ``create``, set up) a spela-stream database; CheckpointError otherwise.

    With ``readonly`` nothing is written: no schema, no WAL switch, no migration, which is what
    listing, eval and predict need on read-only media.
    """
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
        conn = _connect(file, readonly)
        db = Database(conn, recursive_triggers=False, execute_plugins=False)
        try:
            tables = _first_read(conn, db, label, file)
        except sqlite3.OperationalError as exc:
            if not readonly or not _cannot_write(exc):
                raise
            conn.close()  # a WAL file in a folder we cannot write to: read it as it stands
            conn = _connect(file, readonly, immutable=True)
            db = Database(conn, recursive_triggers=False, execute_plugins=False)
            tables = _first_read(conn, db, label, file)
        if tables:
            _check_schema(db, label, tables)  # before any write: a foreign file stays as it was
        elif not create:
            if _ours(file) or file.stat().st_size:
                raise damaged(label, "it holds no tables")
            raise _not_ours(label, "it is empty")
        if readonly:
            return db
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = FULL")  # in WAL: fsync at every commit
        conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT}")
        conn.execute("PRAGMA secure_delete = OFF")  # on in Debian's build: doubles the writes
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
            tables = set(db.table_names())
            _check_schema(db, label, tables)  # another process may have won
        _migrate(conn, tables)
        if tables:
            _repage(conn, file, label)
        return db
    except CheckpointError:
        if conn is not None:
            conn.close()
        raise
    except sqlite3.Error as exc:
        if conn is not None:
            conn.close()
        if isinstance(exc, sqlite3.DatabaseError) and "malformed" in str(exc):
            raise damaged(label, describe(exc)) from None
        raise CheckpointError(f"{label}: cannot open the database ({describe(exc)})") from None
