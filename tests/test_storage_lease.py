"""One writer per run: a second live writer is refused, a dead one's lease is taken over."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from spela_stream.errors import RunBusyError
from storage import CheckpointStore

ROOT = Path(__file__).resolve().parents[1]
HOLD = """
import sys
from storage import CheckpointStore
with CheckpointStore(sys.argv[1]) as store, store.writer("w"):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_a_second_live_writer_is_refused_and_the_lease_is_released(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    CheckpointStore(path).close()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with CheckpointStore(path) as store:
            with pytest.raises(RunBusyError) as caught, store.writer("w"):
                pass
            host = socket.gethostname()
            assert str(caught.value).startswith(
                f"run 'w' is being learned by pid {holder.pid} on {host} since "
            )
            assert str(caught.value).endswith("(wait for it to finish, or stop it)")
            with store.writer("other"):  # another run is free
                pass
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        assert holder.wait(30) == 0
    with CheckpointStore(path) as store:
        assert store.holder("w") is None
        with store.writer("w") as lease:
            assert lease.note is None and lease.pid == os.getpid()
            assert store.holder("w") == lease.__class__(**{**lease.__dict__, "note": None})
        assert store.holder("w") is None


def test_a_dead_writers_lease_is_taken_over_with_a_note(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    CheckpointStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO leases VALUES ('w', ?, ?, '2026-01-01T00:00:00+00:00', 't')",
                     (dead.pid, socket.gethostname()))  # fmt: skip
    with CheckpointStore(path) as store, store.writer("w") as lease:
        assert lease.note is not None and f"pid {dead.pid}" in lease.note
        assert "no longer running" in lease.note
