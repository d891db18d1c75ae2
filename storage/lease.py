"""One writer per run: a lease row (pid, host, since) taken in a write transaction.

A lease whose process has died on this host is stale and is taken over, with a note; one held
by a live process (or by any process on another host, whose liveness cannot be seen from here)
makes the second writer fail with RunBusyError.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from spela_stream.errors import RunBusyError


@dataclass(frozen=True)
class Lease:
    """The writer lease of a run: who holds it, since when, and a note if it was taken over."""

    run: str
    pid: int
    host: str
    since: str  # ISO 8601, UTC, to the second
    token: str
    note: str | None = None  # set when a stale lease was taken over


def alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (signal 0 checks without sending)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, but belongs to another user
        return True
    return True


def holder(conn: sqlite3.Connection, run: str) -> Lease | None:
    """The lease row of ``run``, or None when nobody holds it."""
    row = conn.execute("SELECT pid, host, since, token FROM leases WHERE run = ?", (run,))
    found = row.fetchone()
    return None if found is None else Lease(run, int(found[0]), found[1], found[2], found[3])


def acquire(conn: sqlite3.Connection, run: str) -> Lease:
    """Take the lease of ``run`` inside the caller's write transaction, or raise RunBusyError."""
    host = socket.gethostname()
    held = holder(conn, run)
    note = None
    if held is not None:
        if held.host != host or alive(held.pid):
            raise RunBusyError(
                f"run {run!r} is being learned by pid {held.pid} on {held.host} since "
                f"{held.since} (wait for it to finish, or stop it)"
            )
        note = (
            f"run {run!r}: took over the writer lease of pid {held.pid} on {held.host} "
            f"(since {held.since}), which is no longer running"
        )
    since = datetime.now(UTC).isoformat(timespec="seconds")
    lease = Lease(run, os.getpid(), host, since, uuid.uuid4().hex, note)
    conn.execute(
        "INSERT OR REPLACE INTO leases (run, pid, host, since, token) VALUES (?, ?, ?, ?, ?)",
        (run, lease.pid, lease.host, lease.since, lease.token),
    )
    return lease


def release(conn: sqlite3.Connection, lease: Lease) -> None:
    """Drop the lease, if it is still this one (inside the caller's write transaction)."""
    conn.execute("DELETE FROM leases WHERE run = ? AND token = ?", (lease.run, lease.token))
