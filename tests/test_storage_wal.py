"""Damage inside the write-ahead log is said, not silent (issue 12): SQLite's recovery drops
every frame from the first bad one on, and with them the checkpoints committed there."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from storage.walcheck import describe_loss

CMD = [sys.executable, "-m", "cli.app"]
ROOT = Path(__file__).resolve().parents[1]
MODEL = ["--hidden", "8", "--seed", "1", "--memory", "0", "-q"]


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([*CMD, *args], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=300, check=False)  # fmt: skip


@pytest.fixture(scope="module")
def walled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, int]:
    """A copy of a database whose last checkpoints live only in its WAL: a reader held the log
    while a second learner added them (as a crash or a long reader leaves it). Returns the copy,
    the newest checkpoint the file alone holds and the newest the WAL adds."""
    work = tmp_path_factory.mktemp("wal")
    rng = np.random.default_rng(0)
    rows = [",".join(f"{v:.3f}" for v in x) + f",{i % 3}" for i, x in
            enumerate(rng.normal(size=(400, 4)))]  # fmt: skip
    (work / "d.csv").write_text("\n".join(rows) + "\n")
    db = work / "runs.db"
    first = _cli(["learn", "-s", str(work / "d.csv"), "--no-header", "--run", "w", "--limit", "200",
                  "--checkpoint-every", "100", *MODEL], work)  # fmt: skip
    assert first.returncode == 0, first.stderr
    with closing(sqlite3.connect(db)) as conn:
        in_file = conn.execute("SELECT max(id) FROM checkpoints").fetchone()[0]
    with closing(sqlite3.connect(db, isolation_level=None)) as held:
        held.execute("BEGIN")
        held.execute("SELECT count(*) FROM runs").fetchall()  # the log cannot be copied back
        more = _cli(["learn", "--resume", "--run", "w", "--checkpoint-every", "50",
                     "--keep", "0", "-q"], work)  # fmt: skip
        assert more.returncode == 0, more.stderr
        snap = work / "snap"
        snap.mkdir()
        for suffix in ("", "-wal"):
            shutil.copy(f"{db}{suffix}", snap / f"runs.db{suffix}")
        held.execute("ROLLBACK")
    probe = work / "probe"  # opening a copy folds its WAL in: count on another copy
    probe.mkdir()
    with closing(sqlite3.connect(_copy(snap / "runs.db", probe))) as conn:
        in_wal = conn.execute("SELECT max(id) FROM checkpoints").fetchone()[0]
    assert in_wal > in_file  # the resume's checkpoints are in the log only
    return snap / "runs.db", in_file, in_wal


def _copy(walled: Path, into: Path) -> Path:
    for suffix in ("", "-wal"):
        shutil.copy(f"{walled}{suffix}", into / f"runs.db{suffix}")
    return into / "runs.db"


def test_a_sound_wal_says_nothing(walled: tuple[Path, int, int], tmp_path: Path) -> None:
    db = _copy(walled[0], tmp_path)
    assert describe_loss(Path(f"{db}-wal").read_bytes(), "w", "d") is None
    verify = _cli(["checkpoints", "verify", "--db", str(db)], tmp_path)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    resume = _cli(["learn", "--resume", "--db", str(db), "--run", "w", "--limit", "420"],
                  tmp_path)  # fmt: skip
    assert resume.returncode == 0 and "warning" not in resume.stderr, resume.stderr


# (the byte flipped, of a WAL of n bytes; what is said; the checkpoint resume goes on from:
# 0 the newest the WAL held, 1 an older one, 2 the newest the file itself holds)
CASES = [
    (lambda n: n - 100, r"frame (\d+) of \1 is damaged, so SQLite drops it;", 0),  # the lease's
    (lambda n: n // 2, r"frame \d+ of \d+ is damaged, so SQLite drops it and the \d+ after", 1),
    (lambda n: 16, r"its header is damaged, so SQLite ignores all \d+ frames in it", 2),  # a salt
]


@pytest.mark.parametrize(("where", "said", "older"), CASES, ids=["last", "middle", "header"])
def test_damage_in_the_wal_is_said_by_resume_and_verify(
    walled: tuple[Path, int, int], tmp_path: Path, where: Any, said: str, older: int
) -> None:
    db = _copy(walled[0], tmp_path)
    wal = Path(f"{db}-wal")
    data = bytearray(wal.read_bytes())
    data[where(len(data))] ^= 1
    wal.write_bytes(bytes(data))
    verify = _cli(["checkpoints", "verify", "--db", str(db)], tmp_path)
    assert verify.returncode == 1, verify.stdout + verify.stderr
    assert re.search(f"damaged: {re.escape(str(wal))} is damaged: {said}", verify.stdout)
    assert "committed transaction" in verify.stdout and "DAMAGED" in verify.stdout
    resume = _cli(["learn", "--resume", "--db", str(db), "--run", "w", "--limit", "420"],
                  tmp_path)  # fmt: skip
    assert resume.returncode == 0, resume.stderr
    warning = re.search(rf"^warning: {re.escape(str(wal))} is damaged: {said}.*committed "
                        r"transactions? in it .* are lost$", resume.stderr, re.M)  # fmt: skip
    assert warning, resume.stderr
    went = re.search(r"resuming run 'w' from checkpoint (\d+)", resume.stderr)
    assert went, resume.stderr
    _, in_file, in_wal = walled
    if older == 0:  # the last transaction was the lease's release: no checkpoint lost
        assert int(went[1]) == in_wal
    else:
        assert in_file <= int(went[1]) < in_wal and (older == 1 or int(went[1]) == in_file)


def test_nothing_is_said_while_another_process_writes_the_log(
    walled: tuple[Path, int, int], tmp_path: Path
) -> None:
    # A live writer's tail may be half-written: while a process holds the log's write lock
    # (SQLite's byte 120 of the -shm file), a frame that does not check out is no evidence.
    from storage.walcheck import WRITE_LOCK, lost_in_wal

    db = _copy(walled[0], tmp_path)
    wal = Path(f"{db}-wal")
    data = bytearray(wal.read_bytes())
    data[len(data) // 2] ^= 1
    wal.write_bytes(bytes(data))
    assert lost_in_wal(db) is not None
    hold = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            f"fcntl.lockf(fd, fcntl.LOCK_EX, 1, {WRITE_LOCK}); print('held', flush=True); "
            "sys.stdin.read()")  # fmt: skip
    holder = subprocess.Popen([sys.executable, "-c", hold, f"{db}-shm"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert lost_in_wal(db) is None
    finally:
        holder.communicate("", timeout=30)
    assert lost_in_wal(db) is not None
