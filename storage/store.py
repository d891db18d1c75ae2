"""CheckpointStore: runs, checkpoints (one transaction each), tensors and metric history."""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from sqlite_utils import Database

from spela_stream.errors import CheckpointDamagedError, CheckpointError, DatabaseDamagedError
from storage import lease as leases
from storage.codec import Tensor, dumps, encode_array
from storage.integrity import (
    RUN_FIELDS,
    quick_check,
    read_checked,
    read_run,
    row_checksum,
    run_checksum,
    verify_database,
)
from storage.lease import Lease
from storage.records import Checkpoint, CheckpointInfo, RunInfo, VerifyReport, parse_json
from storage.schema import BUSY_TIMEOUT_S, damaged, describe, open_database
from storage.walcheck import lost_in_wal
from storage.walcopy import WalCopier, WalCopy

MAX_LISTED = 10  # names or ids an error message lists


# memory_bytes: the bytes of the latest checkpoint's tensors named memory.* (a continual memory).
_RUN_SQL = """SELECT r.*,
    (SELECT COUNT(*) FROM checkpoints c WHERE c.run = r.name) AS checkpoints,
    (SELECT COALESCE(SUM(length(t.data)), 0) FROM tensors t WHERE t.checkpoint =
        (SELECT MAX(c.id) FROM checkpoints c WHERE c.run = r.name) AND t.name GLOB 'memory.*')
        AS memory_bytes FROM runs r"""
_CHECKPOINT_SQL = """SELECT id, run, samples, source, position, "where", created, bytes,
    (SELECT COUNT(*) FROM tensors t WHERE t.checkpoint = c.id) AS tensors FROM checkpoints c"""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _int(value: Any, what: str) -> int:
    if not isinstance(value, int | np.integer) or isinstance(value, bool):
        raise CheckpointError(f"{what} must be an int, got {value!r}")
    return int(value)


def _rows(conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
    """Rows addressable by column name; the connection itself keeps sqlite-utils' tuples."""
    cursor = conn.cursor()
    cursor.row_factory = sqlite3.Row
    return cursor.execute(sql, params).fetchall()


def _listing(items: Sequence[object]) -> str:
    shown = ", ".join(str(x) for x in items[:MAX_LISTED])
    return shown + (f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


class CheckpointStore:
    """A SQLite file of runs and their checkpoints; WAL, so readers never see half a save.

    >>> import tempfile
    >>> import numpy as np
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as tmp, CheckpointStore(Path(tmp) / "runs.db") as db:
    ...     run = db.create_run(None, {"hidden": [8]}, "data.csv")
    ...     state = {"labels": [1, "1", True], "w": np.eye(2, 3, dtype=np.float32)}
    ...     cid = db.save(run, state=state, samples=10, source="data.csv", position=10,
    ...                   where="data.csv line 11", history=[{"samples": 10, "acc": 0.9}])
    ...     ck = db.load(run)
    ...     print(run, cid, ck.state["labels"], ck.state["w"].dtype, db.history(run))
    run-1 1 [1, '1', True] float32 [{'samples': 10, 'acc': 0.9}]
    """

    def __init__(
        self, path: str | Path, *, create: bool = True, readonly: bool | None = None
    ) -> None:
        """Open the file at ``path``, creating it (and its tables) if ``create``.

        ``readonly=True`` opens it for reading only (SQLite's ``mode=ro``; ``immutable=1`` on
        media where not even the WAL index can be written): nothing is written, saves fail.
        The default, None, opens read-only only when ``create`` is False and the file or its
        folder cannot be written, so a database on a read-only mount can still be read.
        """
        self.path = Path(path)
        self._label = str(path)
        if readonly is None:
            writable = os.access(self.path.parent, os.W_OK) and (
                not self.path.exists() or os.access(self.path, os.W_OK)
            )
            readonly = not create and not writable
        if readonly and create:
            raise CheckpointError(f"{self._label}: a store opened read-only cannot create")
        self.readonly = readonly
        # before SQLite's recovery reads the log past a damaged frame and a writer overwrites it
        self.wal_damage: str | None = lost_in_wal(self.path) if self.path.is_file() else None
        self.db: Database = open_database(path, create=create, readonly=readonly)
        self._closed = False
        self._wal: WalCopier | None = None  # started by the first save

    # -- plumbing ---------------------------------------------------------------------------

    @contextmanager
    def _transaction(self, what: str, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction: BEGIN IMMEDIATE to write, a snapshot (BEGIN) to read several rows."""
        if self._closed:
            raise CheckpointError(f"{self._label}: the store is closed")
        if write and self.readonly:
            raise CheckpointError(
                f"{self._label}: {what} needs to write, but the database is open read-only "
                "(is it on a read-only mount, or its folder not writable?)"
            )
        conn: sqlite3.Connection = self.db.conn
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield conn
            if write:
                conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                why = describe(exc)
                if isinstance(exc, sqlite3.DatabaseError) and "malformed" in why:
                    raise damaged(self._label, f"{what}: {why}") from None
                raise CheckpointError(f"{self._label}: {what} failed ({why})") from None
            raise
        if not write:  # a snapshot ends the same either way; SQLite may repeat an error at COMMIT
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")

    def _require_run(self, conn: sqlite3.Connection, name: str) -> None:
        if conn.execute("SELECT 1 FROM runs WHERE name = ?", (name,)).fetchone() is None:
            names = [r[0] for r in conn.execute("SELECT name FROM runs ORDER BY updated DESC")]
            runs = f"its runs: {_listing(names)}" if names else "it has no runs yet"
            raise CheckpointError(f"no run {name!r} in {self._label} ({runs})")

    # -- runs -------------------------------------------------------------------------------

    def create_run(self, name: str | None, config: Mapping[str, Any], source: str) -> str:
        """Add a run (named ``run-N`` when ``name`` is None) and return its name."""
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise CheckpointError(f"a run name must be non-empty text, got {name!r}")
        config_json = dumps(dict(config), "config")
        now = _now()
        with self._transaction("creating a run", write=True) as conn:
            if name is None:
                taken = (
                    re.fullmatch(r"run-([0-9]+)", r[0])
                    for r in conn.execute("SELECT name FROM runs WHERE name LIKE 'run-%'")
                )
                name = f"run-{max((int(m[1]) for m in taken if m), default=0) + 1}"
            elif conn.execute("SELECT 1 FROM runs WHERE name = ?", (name,)).fetchone():
                raise CheckpointError(
                    f"run {name!r} already exists in {self._label} "
                    "(use --resume to continue it, or another --run)"
                )
            row = {"name": name, "config": config_json, "source": str(source), "created": now}
            self.db.table("runs").insert(
                {**row, "updated": now, "samples": 0, "summary": None,
                 "checksum": run_checksum(row)}
            )  # fmt: skip
        return name

    def delete_run(self, name: str) -> None:
        """Remove a run with its checkpoints, tensors and history (foreign keys cascade)."""
        with self._transaction("deleting a run", write=True) as conn:
            self._require_run(conn, name)
            conn.execute("DELETE FROM runs WHERE name = ?", (name,))

    def run(self, name: str) -> RunInfo:
        """The run called ``name``; CheckpointError listing the runs there are if none is."""
        with self._transaction("reading a run") as conn:
            self._require_run(conn, name)
            return read_run(_rows(conn, _RUN_SQL + " WHERE name = ?", (name,))[0], self._label)

    def latest_run(self) -> RunInfo | None:
        """The run updated most recently, or None in an empty database."""
        with self._transaction("reading runs") as conn:
            rows = _rows(conn, _RUN_SQL + " ORDER BY updated DESC, rowid DESC LIMIT 1")
        return read_run(rows[0], self._label) if rows else None

    def runs(self) -> list[RunInfo]:
        """Every run, oldest first."""
        with self._transaction("reading runs") as conn:
            return [read_run(r, self._label) for r in _rows(conn, _RUN_SQL + " ORDER BY rowid")]

    # -- checkpoints ------------------------------------------------------------------------

    def save(
        self,
        run: str,
        *,
        state: Mapping[str, Any],
        samples: int,
        source: str,
        position: int,
        where: str,
        metrics: Mapping[str, Any] | None = None,
        history: Sequence[Mapping[str, Any]] = (),
        keep: int | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> int:
        """Write a checkpoint, its history rows and the run's progress in one transaction.

        Every numpy array in ``state`` becomes a tensor row; the other values are kept as one
        JSON object. With ``keep``, only the run's newest ``keep`` checkpoints remain. A
        ``config`` replaces the run's (a shape its first sample fixed, ``hidden="auto"``).
        Returns the new checkpoint's id.
        """
        if keep is not None and _int(keep, "keep") < 1:
            raise CheckpointError(f"keep must be at least 1, got {keep}")
        samples, position = _int(samples, "samples"), _int(position, "position")
        tensors: list[Tensor] = []
        rest: dict[str, Any] = {}
        for key, value in state.items():
            if not isinstance(key, str):
                raise CheckpointError(f"state keys must be text, got {key!r}")
            if isinstance(value, np.ndarray):
                tensors.append(encode_array(key, value))
            else:
                rest[key] = value
        state_json = dumps(rest, "state")
        config_json = None if config is None else dumps(dict(config), "config")
        metrics_json = summary_json = None
        if metrics is not None:
            metrics_json = dumps(dict(metrics), "metrics")
            if metrics.get("summary") is not None:
                if not isinstance(metrics["summary"], Mapping):
                    raise CheckpointError("metrics['summary'] must be a dict")
                summary_json = dumps(dict(metrics["summary"]), "metrics['summary']")
        rows = []
        for i, item in enumerate(history):
            if not isinstance(item, Mapping):
                raise CheckpointError(f"history[{i}] must be a dict, got {item!r}")
            kind = item.get("kind", "report")
            if not isinstance(kind, str):
                raise CheckpointError(f"history[{i}]['kind'] must be text, got {kind!r}")
            at = _int(item.get("samples"), f"history[{i}]['samples']")
            rows.append(
                {
                    "run": run,
                    "samples": at,
                    "kind": kind,
                    "data": dumps(dict(item), f"history[{i}]"),
                }
            )
        size = sum(t.nbytes for t in tensors) + len(state_json.encode())
        size += 0 if metrics_json is None else len(metrics_json.encode())
        now = _now()
        described = [(t.name, t.dtype, json.dumps(t.shape), t.checksum) for t in tensors]
        row = {
            "run": run,
            "samples": samples,
            "source": str(source),
            "position": position,
            "where": str(where),
            "created": now,
            "state": state_json,
            "metrics": metrics_json,
            "bytes": size,
        }
        checksum = row_checksum(row, described)
        with self._transaction("saving a checkpoint", write=True) as conn:
            self._require_run(conn, run)
            if keep is not None:  # first, so that the new checkpoint reuses the freed pages
                old = "SELECT id FROM checkpoints WHERE run = ? ORDER BY id DESC LIMIT -1 OFFSET ?"
                conn.execute(f"DELETE FROM tensors WHERE checkpoint IN ({old})", (run, keep - 1))
                conn.execute(f"DELETE FROM checkpoints WHERE id IN ({old})", (run, keep - 1))
            cur = conn.execute(
                'INSERT INTO checkpoints (run, samples, source, position, "where", created, state,'
                " metrics, bytes, checksum) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*row.values(), checksum),
            )
            cid = int(cur.lastrowid or 0)
            conn.executemany(
                "INSERT INTO tensors (checkpoint, name, dtype, shape, data, checksum)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(cid, *d[:3], t.data, d[3]) for t, d in zip(tensors, described, strict=True)],
            )
            if rows:
                self.db.table("history").insert_all(rows)
            conn.execute(
                "UPDATE runs SET samples = ?, updated = ?, summary = coalesce(?, summary),"
                " config = coalesce(?, config) WHERE name = ?",
                (samples, now, summary_json, config_json, run),
            )
            if config_json is not None:  # the run's checksum covers its config: keep it true
                fields = ", ".join(RUN_FIELDS)
                kept = conn.execute(f"SELECT {fields} FROM runs WHERE name = ?", (run,)).fetchone()
                conn.execute(
                    "UPDATE runs SET checksum = ? WHERE name = ?",
                    (run_checksum(dict(zip(RUN_FIELDS, kept, strict=True))), run),
                )
        if self._wal is None:
            self.db.conn.execute("PRAGMA wal_autocheckpoint = 0")  # the copier does it instead
            self._wal = WalCopier(str(self.path), BUSY_TIMEOUT_S)
        self._wal.nudge()
        return cid

    def settle(self) -> WalCopy | None:
        """Wait for the WAL copy that follows the latest save; what it copied (None before any)."""
        return None if self._wal is None else self._wal.settle()

    def load(self, run: str, checkpoint: int | None = None) -> Checkpoint:
        """The run's newest intact checkpoint (or the one with id ``checkpoint``), verified.

        Every checksum is checked (the row's and each tensor's). Without an id, newer damaged
        checkpoints are passed over, one note each in ``Checkpoint.damaged`` for the caller to
        show; CheckpointDamagedError when none is intact, or when the one asked for is damaged.
        """
        with self._transaction("loading a checkpoint") as conn:
            self._require_run(conn, run)
            sql = "SELECT id FROM checkpoints WHERE run = ? ORDER BY id DESC"
            ids = [r[0] for r in conn.execute(sql, (run,))]
            if not ids:
                raise CheckpointError(f"run {run!r} in {self._label} has no checkpoints yet")
            if checkpoint is not None:
                if checkpoint not in ids:
                    raise CheckpointError(
                        f"no checkpoint {checkpoint} in run {run!r} of {self._label} "
                        f"(its checkpoints, newest first: {_listing(ids)})"
                    )
                return read_checked(conn, run, checkpoint, self._label)
            notes: list[str] = []
            for cid in ids:
                try:
                    found = read_checked(conn, run, cid, self._label)
                except CheckpointDamagedError as exc:
                    notes.append(str(exc))
                    continue
                return replace(found, damaged=notes)
        raise CheckpointDamagedError(
            f"every checkpoint of run {run!r} in {self._label} is damaged ({notes[0]}"
            + (f"; and {len(notes) - 1} older" if len(notes) > 1 else "")
            + f"): run `spela-stream checkpoints verify --db {self._label}`, or restore a copy"
        )

    def verify(self, run: str | None = None) -> VerifyReport:
        """Check the whole file (SQLite's integrity_check) and every checkpoint's checksums.

        Damage, SQLite's, a checksum's or committed transactions lost in a damaged WAL (as found
        when the store was opened), is reported, not raised (``VerifyReport.sound``).
        """
        with self._transaction("verifying the database") as conn:
            report = verify_database(conn, self._label, run)
        if self.wal_damage is None:
            return report
        return replace(report, integrity=[self.wal_damage, *report.integrity])

    def check(self) -> None:
        """DatabaseDamagedError unless SQLite's quick_check finds the file sound (a quick look
        at every page, without the checksums: ``verify`` does those)."""
        with self._transaction("checking the database") as conn:
            found = quick_check(conn)
        if found:
            more = f"; and {len(found) - 1} more" if len(found) > 1 else ""
            raise damaged(self._label, found[0] + more)

    # -- the writer lease -------------------------------------------------------------------

    @contextmanager
    def writer(self, run: str) -> Iterator[Lease]:
        """Hold the run's writer lease for the block: one learner per run at a time.

        Records this process (pid, host, since) in the ``leases`` table. RunBusyError when a
        live process holds it; a stale lease (its process gone from this host) is taken over
        and the returned Lease's ``note`` says so. Released when the block exits.
        """
        with self._transaction("taking the writer lease", write=True) as conn:
            lease = leases.acquire(conn, run)
        try:
            yield lease
        except BaseException:
            with suppress(CheckpointError):  # a lease left behind is stale once we exit
                self._release(lease)
            raise
        self._release(lease)

    def _release(self, lease: Lease) -> None:
        with self._transaction("releasing the writer lease", write=True) as conn:
            leases.release(conn, lease)

    def holder(self, run: str) -> Lease | None:
        """Who holds the run's writer lease now (live or stale), or None."""
        with self._transaction("reading the writer lease") as conn:
            return leases.holder(conn, run)

    def checkpoints(self, run: str | None = None) -> list[CheckpointInfo]:
        """Checkpoints of ``run`` (or of every run), newest last."""
        with self._transaction("listing checkpoints") as conn:
            if run is None:
                rows = _rows(conn, _CHECKPOINT_SQL + " ORDER BY id")
            else:
                self._require_run(conn, run)
                sql = _CHECKPOINT_SQL + " WHERE run = ? ORDER BY id"
                rows = _rows(conn, sql, (run,))
        return [CheckpointInfo(**dict(r)) for r in rows]

    def history(self, run: str) -> list[dict[str, Any]]:
        """The history rows saved with the run's checkpoints, in the order they were given."""
        with self._transaction("reading history") as conn:
            self._require_run(conn, run)
            rows = conn.execute("SELECT data FROM history WHERE run = ? ORDER BY id", (run,))
            return [parse_json(r[0], f"history row of run {run!r}") for r in rows]

    # -- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection; the store cannot be used afterwards."""
        if not self._closed:
            self._closed = True
            if self._wal is not None:
                self._wal.close()
                with suppress(sqlite3.Error):  # leave a small file behind: fold the WAL in
                    self.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            with suppress(sqlite3.Error):
                self.db.conn.close()

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CheckpointStore({self._label!r})"


def pick_run(store: CheckpointStore, name: str | None) -> RunInfo:
    """The run named ``name``, or the most recently updated one."""
    if name is not None:
        return store.run(name)
    latest = store.latest_run()
    if latest is None:
        raise CheckpointError(f"{store.path} holds no runs yet (learn one with --db {store.path})")
    return latest


def verify_file(path: str | Path, run: str | None = None) -> VerifyReport:
    """``CheckpointStore.verify`` on the file at ``path``, opened read-only; a file SQLite
    cannot open at all is a report of damage too (CheckpointError if it is not ours)."""
    try:
        store = CheckpointStore(path, create=False, readonly=True)
    except DatabaseDamagedError as exc:
        why = [f"SQLite cannot open the file: {exc.why}"]
        return VerifyReport(str(path), why, 0, 0, [], [], readable=False)
    with store:
        return store.verify(run)
