"""kill -9 trials and two writers on one run, against the real command (benchmarks/reliability)."""

from __future__ import annotations

import random
import re
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .faults import (
    Outcome,
    Section,
    cli,
    code,
    mnist_csv,
    model_digest,
    pump,
    spawn,
    wait_for_row,
    wal_state,
    write_lock_holder,
)

RUN = "k"
# A replay memory of 200 MNIST digits makes each checkpoint ~0.7 MB, so that a tiny
# --checkpoint-every keeps the learner inside checkpoint writes much of the time.
MODEL = ["--hidden", "64", "--memory", "200", "--seed", "3"]
QUIET = ["--checkpoint-seconds", "0"]  # checkpoints only on the sample count, and at the end
RESUMED = re.compile(r"resuming run '[^']+' from checkpoint (\d+): (\d+) samples")
# A cycle of checkpoint intervals: the small ones land kills inside checkpoint writes.
INTERVALS = (1, 2, 5, 1, 50, 200)


@dataclass
class KillTrial:
    """One kill -9 and what followed it."""

    interval: int
    timer: bool  # killed on a timer, not on the WAL's first write
    killed_at: int  # the progress row seen just before the kill
    in_write: bool  # it held the WAL write lock (a checkpoint's transaction) just before
    wal_frames: int  # valid WAL frames on disk after the kill
    mid_write: bool  # the WAL held frames of a transaction without its commit frame
    verify: Outcome
    resume: Outcome
    resumed_from: int | None  # the samples of the checkpoint it resumed from (None: fresh)
    identical: bool

    @property
    def survived(self) -> bool:
        return self.verify.code == 0 and self.resume.code == 0 and self.identical


def reference(work: Path, data: Path) -> tuple[str, int]:
    """The digest of an unbroken run over ``data`` (one checkpoint, at the end)."""
    db = work / "whole.db"
    done = cli(["learn", "-s", str(data), "--db", str(db), "--run", RUN, "--every", "100000",
                *MODEL, *QUIET], work)  # fmt: skip
    if done.code != 0:
        raise SystemExit(f"the unbroken run failed: {done.err}")
    return model_digest(db, RUN)


def watch_write(shm: Path, pid: int, limit_s: float = 10.0) -> bool:
    """Spin until ``pid`` holds the database's WAL write lock (a checkpoint's transaction is
    open): True, or False after ``limit_s``."""
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        if write_lock_holder(shm) == pid:
            return True
    return False


def kill_trial(
    work: Path, data: Path, interval: int, row: int, delay: float | None, want: str
) -> KillTrial:
    """Learn ``data`` checkpointing every ``interval`` samples, kill -9 ``delay`` s after the
    progress row ``row`` (None: the moment the WAL is next written), then verify the file,
    resume, and compare with the digest ``want``."""
    work.mkdir(parents=True, exist_ok=True)
    db = work / "k.db"
    for p in work.glob("k.db*"):
        p.unlink()
    args = ["learn", "-s", str(data), "--db", str(db), "--run", RUN, *QUIET]
    proc = spawn([*args, *MODEL, "--every", "25", "--checkpoint-every", str(interval)], work)
    lines = pump(proc)
    wait_for_row(lines, row)
    shm = db.with_name(db.name + "-shm")
    if delay is None:
        watch_write(shm, proc.pid)
    else:
        time.sleep(delay)
    in_write = write_lock_holder(shm) == proc.pid
    proc.send_signal(signal.SIGKILL)
    proc.wait(60)
    wal = wal_state(db.with_name(db.name + "-wal"))
    verify = cli(["checkpoints", "verify", "--db", str(db)], work)
    resume = cli([*args, "--resume", "--every", "100000"], work)
    found = RESUMED.search(resume.err)
    identical = resume.code == 0 and model_digest(db, RUN)[0] == want
    return KillTrial(
        interval, delay is not None, row, in_write, wal.frames, wal.mid_write, verify, resume,
        int(found.group(2)) if found else None, identical,
    )  # fmt: skip


def kill_section(work: Path, trials: int, samples: int, seed: int = 12, jobs: int = 1) -> Section:
    """``trials`` kill -9 trials over ``samples`` MNIST digits, seeded kill times, ``jobs`` at
    a time."""
    start = time.monotonic()
    work.mkdir(parents=True, exist_ok=True)
    data = mnist_csv(work / "mnist.csv", samples)
    want, _ = reference(work, data)
    rng = random.Random(seed)
    plan = []
    for i in range(trials):
        interval = INTERVALS[i % len(INTERVALS)]
        row = rng.randrange(50, samples - 100, 25)
        delay = None if i % 2 else rng.uniform(0.0, 0.25)
        if i == trials - 1:  # before its first checkpoint
            interval, row, delay = 200, 25, 0.0
        plan.append((work / f"trial{i + 1}", data, interval, row, delay, want))
    with ThreadPoolExecutor(jobs) as pool:  # each trial its own processes and files
        results = list(pool.map(lambda args: kill_trial(*args), plan))
    rows: list[list[object]] = [
        [i + 1, t.interval, t.killed_at, "timer" if t.timer else "in a write", t.in_write,
         t.wal_frames,
         t.mid_write, t.verify.code, t.resume.code,
         "fresh start" if t.resumed_from is None else t.resumed_from, t.identical]
        for i, t in enumerate(results)
    ]  # fmt: skip
    survived = sum(t.survived for t in results)
    inside = sum(t.in_write for t in results)
    cut = sum(t.mid_write for t in results)
    return Section(
        title="kill -9 during learning",
        intro=(
            f"`learn` over {samples} MNIST digits (`{' '.join(MODEL)}`), checkpointing every N "
            "samples, killed with SIGKILL after a seeded progress row: odd trials a seeded "
            "random 0-0.25 s later, even ones the moment the learner holds the database's WAL "
            "write lock (a checkpoint's transaction is open; N = 1 or 2 keeps it writing much "
            "of the time). *Write lock held* is that lock's state (F_GETLK on the -shm file) "
            "just before the SIGKILL. Then `checkpoints verify` and `learn --resume` on the "
            "same file; *identical* compares a sha256 over every array and JSON value of the "
            "resumed run's final checkpoint with an unbroken run's. *WAL mid-write* reads the "
            "WAL file as SQLite's recovery does: frames of a transaction with no commit frame. "
            "The last trial (every 200) is killed at row 25, before its first checkpoint."
        ),
        header=["trial", "checkpoint every", "killed after row", "kill", "write lock held",
                "WAL frames", "WAL mid-write", "verify exit", "resume exit", "resumed from",
                "identical"],
        rows=rows,
        verdict=(
            f"**{survived} of {len(results)} survived** (verify exit 0, resume exit 0, final "
            f"model bit-identical); {inside} kills landed inside a checkpoint's write "
            f"transaction, {cut} left a transaction's frames in the WAL without its commit"
        ),
        seconds=time.monotonic() - start,
    )  # fmt: skip


def two_writers_section(work: Path) -> Section:
    """A live writer holds run 'w' on a quiet pipe; others try it, another run, then after a
    kill -9 (a stale lease)."""
    start = time.monotonic()
    work.mkdir(parents=True, exist_ok=True)
    db = work / "two.db"
    for p in work.glob("two.db*"):
        p.unlink()
    lines = "a,b,label\n" + "".join(f"{i % 7},{i % 3},{i % 2}\n" for i in range(40))
    base = ["learn", "-s", "-", "--db", str(db), "--checkpoint-seconds", "0"]
    hold = ["--hidden", "8", "--run", "w", "--every", "10", "--checkpoint-every", "10"]
    holder = spawn([*base, *hold], work, stdin=subprocess.PIPE)
    err = pump(holder)
    assert holder.stdin is not None
    holder.stdin.write(lines)
    holder.stdin.flush()  # and the pipe stays open: the holder waits for more
    wait_for_row(err, 40)
    cases: list[tuple[str, Outcome]] = [
        ("second learn --resume --run w", cli([*base, "--run", "w", "--resume"], work, lines)),
        ("second learn --run w (no --resume)", cli([*base, "--run", "w"], work, lines)),
        (
            "learn --run other, meanwhile",
            cli([*base, "--hidden", "8", "--run", "other"], work, lines),
        ),
        ("checkpoints verify, meanwhile", cli(["checkpoints", "verify", "--db", str(db)], work)),
    ]
    holder.send_signal(signal.SIGKILL)
    holder.wait(60)
    cases.append(("learn --resume --run w after the holder's kill -9",
                  cli([*base, "--run", "w", "--resume"], work, lines)))  # fmt: skip
    after = cli(["checkpoints", "verify", "--db", str(db), "--run", "w"], work)
    cases.append(("checkpoints verify --run w, at the end", after))
    rows: list[list[object]] = [
        [name, o.code, code(o.message), "TRACEBACK" if o.traceback else "none"] for name, o in cases
    ]
    busy = cases[0][1]
    return Section(
        title="Two writers on one run",
        intro=(
            "A `learn -s - --run w` holds the run (it has learned 40 lines and waits on an open "
            "pipe); meanwhile other commands try the same database. Then the holder is killed "
            "with SIGKILL and a new writer takes its stale lease."
        ),
        header=["attempt", "exit", "first line of message", "traceback"],
        rows=rows,
        verdict=(
            f"the second writer exits {busy.code}"
            + (" with the lease error" if "is being learned by pid" in busy.message else "")
        ),
        seconds=time.monotonic() - start,
    )
