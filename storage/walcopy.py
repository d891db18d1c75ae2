"""Copy the write-ahead log back into the database on a thread of its own.

SQLite copies the WAL into the database file when it grows past a threshold, inside the commit
that crossed it: with checkpoints of several MB that copy lands on the learner every few saves
(measured: saves of ~28 ms with spikes to ~150 ms). The store turns that automatic copy off and
asks this thread, with its own connection, to do a PASSIVE copy after each save: it never blocks
a writer, and on a 2-core machine it runs beside the learner. Durability is unchanged: a commit
is on disk (fsynced WAL) before ``save`` returns; the copy only moves it.

Each copy that leaves nothing behind lets the next commit start the WAL again from its first
frame, so the WAL holds one checkpoint's pages, not a history of them. ``last`` keeps what SQLite
said about the latest copy (frames in the WAL, frames copied): the pages one commit wrote, which
``benchmarks/write_bench.py`` and the tests count.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import suppress
from dataclasses import dataclass


@dataclass(frozen=True)
class WalCopy:
    """One ``wal_checkpoint(PASSIVE)``: frames in the WAL, and how many reached the file."""

    frames: int
    copied: int

    @property
    def complete(self) -> bool:
        """Every frame was copied: the next commit starts the WAL over."""
        return self.frames == self.copied


class WalCopier:
    """A daemon thread that runs ``PRAGMA wal_checkpoint(PASSIVE)`` when nudged."""

    def __init__(self, path: str, busy_timeout_s: float) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self._cond = threading.Condition()
        self._asked = 0  # nudges so far
        self._done = 0  # nudges answered by a copy (or a failed try)
        self._stop = False
        self.copies = 0
        self.last: WalCopy | None = None
        self._thread = threading.Thread(target=self._run, name="spela-wal-copy", daemon=True)
        self._thread.start()

    def nudge(self) -> None:
        """Ask for a copy soon (after a commit)."""
        with self._cond:
            self._asked += 1
            self._cond.notify_all()

    def settle(self, timeout_s: float = 10.0) -> WalCopy | None:
        """Wait until every nudge so far has had its copy; the latest copy's figures."""
        with self._cond:
            target = self._asked
            self._cond.wait_for(lambda: self._done >= target or self._stop, timeout_s)
            return self.last

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._asked > self._done or self._stop)
                    if self._stop:
                        return
                    target = self._asked
                with suppress(sqlite3.Error):  # a failed copy is retried by the next one
                    _, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.last = WalCopy(int(frames), int(copied))
                    self.copies += 1
                with self._cond:
                    self._done = target
                    self._cond.notify_all()
        finally:
            conn.close()

    def close(self) -> None:
        """Stop the thread (a copy under way finishes first)."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join()
