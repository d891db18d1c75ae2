"""Copy the write-ahead log back into the database on a thread of its own.

SQLite copies the WAL into the database file when it grows past a threshold, inside the commit
that crossed it: with checkpoints of several MB that copy lands on the learner every few saves
(measured: saves of ~28 ms with spikes to ~150 ms). The store turns that automatic copy off and
asks this thread, with its own connection, to do a PASSIVE copy after each save: it never blocks
a writer, and on a 2-core machine it runs beside the learner. Durability is unchanged: a commit
is on disk (fsynced WAL) before ``save`` returns; the copy only moves it.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import suppress


class WalCopier:
    """A daemon thread that runs ``PRAGMA wal_checkpoint(PASSIVE)`` when nudged."""

    def __init__(self, path: str, busy_timeout_s: float) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self._wake = threading.Event()
        self._stop = False
        self.copies = 0
        self._thread = threading.Thread(target=self._run, name="spela-wal-copy", daemon=True)
        self._thread.start()

    def nudge(self) -> None:
        """Ask for a copy soon (after a commit)."""
        self._wake.set()

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stop:
                    return
                with suppress(sqlite3.Error):  # a failed copy is retried by the next one
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.copies += 1
        finally:
            conn.close()

    def close(self) -> None:
        """Stop the thread (a copy under way finishes first)."""
        self._stop = True
        self._wake.set()
        self._thread.join()
