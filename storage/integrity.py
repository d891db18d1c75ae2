"""Checksums over run and checkpoint rows, reading them back verified, the store-wide report.

A checkpoint row's ``checksum`` is the sha256 of one canonical JSON list: every column the
checkpoint is rebuilt from (the JSON text exactly as stored) and, per tensor sorted by name, its
name, dtype, shape and sha256 (which covers the bytes). A changed byte anywhere, a tensor row
added or deleted, shows as a mismatch. A run row's ``checksum`` covers what is fixed when it is
created: its name, config (the JSON text as stored), source and time.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from spela_stream.errors import CheckpointDamagedError, CheckpointError
from storage.codec import decode_array
from storage.records import Checkpoint, CheckpointInfo, RunInfo, VerifyReport, parse_json, run_info
from storage.schema import describe, verify_hint

ROW_FIELDS = ("run", "samples", "source", "position", "where", "created", "state", "metrics")
RUN_FIELDS = ("name", "config", "source", "created")
TENSOR_SQL = "SELECT name, dtype, shape, data, checksum FROM tensors WHERE checkpoint = ?"


def row_checksum(row: Mapping[str, Any] | sqlite3.Row, tensors: Sequence[Sequence[Any]]) -> str:
    """sha256 (hex) of a checkpoint's columns and its tensors' (name, dtype, shape, sha256).

    ``tensors`` holds one ``(name, dtype, shape JSON, sha256)`` sequence per tensor row.
    """
    described = sorted([str(t[0]), str(t[1]), str(t[2]), str(t[3])] for t in tensors)
    payload = [[row[k] for k in ROW_FIELDS], row["bytes"], described]
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def run_checksum(row: Mapping[str, Any] | sqlite3.Row) -> str:
    """sha256 (hex) of a run's name, config JSON text, source and creation time."""
    text = json.dumps([row[k] for k in RUN_FIELDS], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def run_damage(row: sqlite3.Row, label: str) -> str | None:
    """What is wrong with a ``runs`` row, or None; a run created before checksums (``checksum``
    NULL or no such column) is taken as it is."""
    stored = row["checksum"] if "checksum" in row.keys() else None
    if stored is None or stored == run_checksum(row):
        return None
    return (
        f"run {row['name']!r} in {label} is damaged: its config checksum does not match (its "
        "config, source or creation time was changed after it was created)"
    )


def read_run(row: sqlite3.Row, label: str) -> RunInfo:
    """The RunInfo of a ``runs`` row (with its checkpoint count), its checksum verified:
    CheckpointDamagedError naming the run, with the fix, when it does not match."""
    problem = run_damage(row, label)
    if problem is not None:
        raise CheckpointDamagedError(f"{problem}: {verify_hint(label)}")
    return run_info(row)


def _object(text: str | None, what: str, column: str, required: bool) -> dict[str, Any] | None:
    value = parse_json(text, f"{what}: its {column} column")
    if value is None and not required:
        return None
    if not isinstance(value, dict):
        raise CheckpointDamagedError(f"{what} is damaged: its {column} JSON is not an object")
    return value


def read_checkpoint(conn: sqlite3.Connection, row: sqlite3.Row, label: str) -> Checkpoint:
    """The checkpoint of a ``checkpoints`` row, every checksum verified.

    Raises CheckpointDamagedError naming the run, the checkpoint and what is wrong. A row saved
    before checksums existed (``checksum`` NULL or no such column) is read unchecked.
    """
    what = f"checkpoint {row['id']} of run {row['run']!r} in {label}"
    try:
        cursor = conn.cursor()
        cursor.row_factory = sqlite3.Row
        tensors = cursor.execute(TENSOR_SQL + " ORDER BY rowid", (row["id"],)).fetchall()
    except sqlite3.DatabaseError as exc:
        msg = f"{what} is damaged: its tensors cannot be read ({describe(exc)})"
        raise CheckpointDamagedError(msg) from None
    stored = row["checksum"] if "checksum" in row.keys() else None
    described = [(t["name"], t["dtype"], t["shape"], t["checksum"]) for t in tensors]
    if stored is not None and stored != row_checksum(row, described):
        raise CheckpointDamagedError(
            f"{what} is damaged: its checksum does not match its contents (the state, metrics, "
            "position or tensor rows were changed after it was saved)"
        )
    try:
        state = _object(row["state"], what, "state", required=True)
        metrics = _object(row["metrics"], what, "metrics", required=False)
    except CheckpointDamagedError:
        raise
    except CheckpointError as exc:
        raise CheckpointDamagedError(str(exc)) from None
    assert state is not None
    for t in tensors:
        if t["name"] in state:
            raise CheckpointDamagedError(f"{what} is damaged: {t['name']!r} is stored twice")
        try:
            state[t["name"]] = decode_array(*t)
        except CheckpointError as exc:
            raise CheckpointDamagedError(f"{what} is damaged: {exc}") from None
    info = CheckpointInfo(
        id=row["id"],
        run=row["run"],
        samples=row["samples"],
        source=row["source"],
        position=row["position"],
        where=row["where"],
        created=row["created"],
        bytes=row["bytes"],
        tensors=len(tensors),
    )
    return Checkpoint(info=info, state=state, metrics=metrics)


def read_checked(conn: sqlite3.Connection, run: str, cid: int, label: str) -> Checkpoint:
    """Checkpoint ``cid`` of ``run``, verified; a row SQLite cannot read is damage too."""
    try:
        cursor = conn.cursor()
        cursor.row_factory = sqlite3.Row
        row = cursor.execute("SELECT * FROM checkpoints WHERE id = ?", (cid,)).fetchall()[0]
        return read_checkpoint(conn, row, label)
    except sqlite3.DatabaseError as exc:
        raise CheckpointDamagedError(
            f"checkpoint {cid} of run {run!r} in {label} is damaged: SQLite cannot read it "
            f"({describe(exc)})"
        ) from None


def quick_check(conn: sqlite3.Connection) -> list[str]:
    """SQLite's ``quick_check`` complaints, one sentence each; empty when it finds none."""
    try:
        found = [str(r[0]) for r in conn.execute("PRAGMA quick_check")]
    except sqlite3.DatabaseError as exc:
        return [f"SQLite quick_check stopped at a page it cannot read: {describe(exc)}"]
    return [] if found == ["ok"] else [f"SQLite quick_check: {line}" for line in found]


def verify_database(conn: sqlite3.Connection, label: str, run: str | None) -> VerifyReport:
    """SQLite's integrity_check, every run's and checkpoint's checksums, and a rebuild of each
    checkpoint's model and loop: a report, never a raise.

    A table SQLite cannot walk (a garbled b-tree page) is reported as damage, with the
    checkpoints that could be read before it still verified. CheckpointError only for a
    ``run`` the database does not hold.
    """
    try:
        found = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
        integrity = [] if found == ["ok"] else [f"SQLite integrity_check: {x}" for x in found]
    except sqlite3.DatabaseError as exc:
        integrity = [f"SQLite integrity_check stopped at a page it cannot read: {describe(exc)}"]
    if run is not None:
        try:
            known = conn.execute("SELECT 1 FROM runs WHERE name = ?", (run,)).fetchone()
        except sqlite3.DatabaseError as exc:
            integrity.append(f"SQLite cannot read the runs table: {describe(exc)}")
            known = (1,)
        if known is None:
            raise CheckpointError(
                f"no run {run!r} in {label} (see `spela-stream runs --db {label}`)"
            )
    run_notes: list[str] = []
    try:
        sql, params = "SELECT * FROM runs", () if run is None else (run,)
        for row in _named(conn, sql + ("" if run is None else " WHERE name = ?"), params):
            problem = run_damage(row, label)
            if problem is not None:
                run_notes.append(problem)
    except sqlite3.Error as exc:
        integrity.append(f"SQLite cannot read the runs table: {describe(exc)}")
    rows: list[tuple[int, str, str | None]] = []
    try:
        has = "checksum" in {r[1] for r in conn.execute("PRAGMA table_info(checkpoints)")}
        sql = f"SELECT id, run, {'checksum' if has else 'NULL'} FROM checkpoints"
        cursor = (
            conn.execute(sql + " ORDER BY id")
            if run is None
            else conn.execute(sql + " WHERE run = ? ORDER BY id", (run,))
        )
        for row in cursor:  # one at a time: the rows before a garbled page are still checked
            rows.append((int(row[0]), str(row[1]), row[2]))
    except sqlite3.Error as exc:
        integrity.append(
            f"SQLite cannot read the checkpoints table past row {len(rows)}: {describe(exc)}"
        )
    from storage.rebuild import rebuild_loop  # loads torch: only when there is one to rebuild

    notes: list[str] = []
    unusable: list[str] = []
    for cid, owner, _ in rows:
        try:
            ck = read_checked(conn, owner, cid, label)
        except CheckpointDamagedError as exc:
            notes.append(str(exc))
            continue
        try:  # checksums that hold over a state this code cannot use: as bad for a resume
            rebuild_loop(ck, f"checkpoint {cid} of run {owner!r} in {label}")
        except CheckpointError as exc:
            unusable.append(str(exc))
    return VerifyReport(
        path=label,
        integrity=integrity,
        checkpoints=len(rows),
        intact=len(rows) - len(notes) - len(unusable),
        unchecked=[cid for cid, _, checksum in rows if checksum is None],
        damaged=run_notes + notes,
        unusable=unusable,
    )


def _named(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[sqlite3.Row]:
    cursor = conn.cursor()
    cursor.row_factory = sqlite3.Row
    return cursor.execute(sql, params).fetchall()
