"""Damaged databases, a full disk and read-only media, against the real command."""

from __future__ import annotations

import json
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

from storage.integrity import row_checksum

from .faults import Outcome, Section, cli, code, mnist_csv, pump, spawn, wait_for_row

RUN = "c"
MODEL = ["--hidden", "32", "--memory", "100", "--seed", "5"]
QUIET = ["--checkpoint-seconds", "0", "--every", "100000"]
RESUMED = re.compile(r"resuming run '[^']+' from checkpoint (\d+)")
Damage = Callable[[Path, list[int]], None]


def sql(path: Path, statement: str, *params: object) -> None:
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(statement, params)


def flip_text(text: str) -> str:
    """One character of ``text`` changed: the first digit past the middle (+1 mod 10), so the
    JSON stays valid and only the value differs; else the middle character."""
    for i in range(len(text) // 2, len(text)):
        if text[i].isdigit():
            return text[:i] + str((int(text[i]) + 1) % 10) + text[i + 1 :]
    i = len(text) // 2
    return text[:i] + ("x" if text[i] != "x" else "y") + text[i + 1 :]


def flip_column(column: str) -> Damage:
    def damage(path: Path, ids: list[int]) -> None:
        with closing(sqlite3.connect(path)) as conn, conn:
            (value,) = conn.execute(
                f'SELECT "{column}" FROM checkpoints WHERE id = ?', (ids[-1],)
            ).fetchone()
            new = value + 1 if isinstance(value, int) else flip_text(value)
            conn.execute(f'UPDATE checkpoints SET "{column}" = ? WHERE id = ?', (new, ids[-1]))

    return damage


def flip_tensor_byte(path: Path, ids: list[int]) -> None:
    """One bit of the middle byte of the newest checkpoint's largest tensor."""
    with closing(sqlite3.connect(path)) as conn, conn:
        name, data = conn.execute(
            "SELECT name, data FROM tensors WHERE checkpoint = ? ORDER BY length(data) DESC",
            (ids[-1],),
        ).fetchone()
        blob = bytearray(data)
        blob[len(blob) // 2] ^= 0x01
        conn.execute("UPDATE tensors SET data = ? WHERE checkpoint = ? AND name = ?",
                     (bytes(blob), ids[-1], name))  # fmt: skip


def tensor_sql(statement: str) -> Damage:
    return lambda path, ids: sql(path, statement, ids[-1])


def resealed(edit: Callable[[dict[str, object]], None], metrics: str | None = None) -> Damage:
    """Edit the newest checkpoint's state JSON (or replace its metrics) and recompute its
    checksum, as a tool that knows the format would: only validation can catch it."""

    def damage(path: Path, ids: list[int]) -> None:
        with closing(sqlite3.connect(path)) as conn, conn:
            conn.row_factory = sqlite3.Row
            row = dict(
                conn.execute("SELECT * FROM checkpoints WHERE id = ?", (ids[-1],)).fetchone()
            )
            state = json.loads(row["state"])
            edit(state)
            row["state"] = json.dumps(state)
            if metrics is not None:
                row["metrics"] = metrics
            tensors = conn.execute(
                "SELECT name, dtype, shape, checksum FROM tensors WHERE checkpoint = ?", (ids[-1],)
            ).fetchall()
            seal = row_checksum(row, tensors)
            conn.execute("UPDATE checkpoints SET state = ?, metrics = ?, checksum = ? WHERE id = ?",
                         (row["state"], row["metrics"], seal, ids[-1]))  # fmt: skip

    return damage


def duplicate_label(state: dict[str, object]) -> None:
    labels = state["labels"]
    assert isinstance(labels, list) and len(labels) > 1
    labels[1] = labels[0]


def file_bytes(edit: Callable[[bytearray], bytes]) -> Damage:
    def damage(path: Path, ids: list[int]) -> None:
        path.write_bytes(edit(bytearray(path.read_bytes())))

    return damage


def garbage_page(which: Callable[[int], int]) -> Callable[[bytearray], bytes]:
    """Overwrite one page (chosen from the page count; the size read from the header) with
    seeded random bytes."""

    def edit(data: bytearray) -> bytes:
        size = int.from_bytes(data[16:18], "big")
        size = 65536 if size == 1 else size
        page = which(len(data) // size)
        data[page * size : (page + 1) * size] = random.Random(page).randbytes(size)
        return bytes(data)

    return edit


def header_edit(offset: int, value: bytes) -> Callable[[bytearray], bytes]:
    def edit(data: bytearray) -> bytes:
        data[offset : offset + len(value)] = value
        return bytes(data)

    return edit


def every_checkpoint(path: Path, ids: list[int]) -> None:
    sql(path, "UPDATE checkpoints SET position = position + 1")


def two_newest(path: Path, ids: list[int]) -> None:
    sql(path, "UPDATE checkpoints SET samples = samples + 1 WHERE id >= ?", ids[-2])


NEWEST = "WHERE checkpoint = ?"
FIRST_TENSOR = "rowid = (SELECT min(rowid) FROM tensors WHERE checkpoint = ?)"
LAST_TENSOR = "rowid = (SELECT max(rowid) FROM tensors WHERE checkpoint = ?)"
CASES: list[tuple[str, Damage]] = [
    *((f"checkpoints.{c}: one byte changed", flip_column(c))
      for c in ("state", "metrics", "where", "source", "created", "checksum")),
    *((f"checkpoints.{c}: + 1", flip_column(c)) for c in ("samples", "position", "bytes")),
    ("tensors.data: one bit flipped", flip_tensor_byte),
    ("tensors.shape edited", tensor_sql(f"UPDATE tensors SET shape = '[1]' WHERE {FIRST_TENSOR}")),
    ("tensors.dtype edited", tensor_sql(f"UPDATE tensors SET dtype = '<f8' {NEWEST}")),
    ("tensors.checksum edited",
     tensor_sql(f"UPDATE tensors SET checksum = 'f' || substr(checksum, 2) {NEWEST}")),
    ("a tensor row deleted", tensor_sql(f"DELETE FROM tensors WHERE {LAST_TENSOR}")),
    ("duplicate label list, checksum recomputed", resealed(duplicate_label)),
    ("metrics JSON {}, checksum recomputed", resealed(lambda s: None, metrics="{}")),
    ("metrics JSON not JSON, checksum recomputed", resealed(lambda s: None, metrics="{oops")),
    ("state JSON keys removed, checksum recomputed", resealed(lambda s: s.clear())),
    ("every checkpoint's position + 1", every_checkpoint),
    ("the two newest checkpoints' samples + 1", two_newest),
    ("runs.config JSON edited",
     lambda p, i: sql(p, "UPDATE runs SET config = replace(config, '32', '33')")),
    ("runs.config not JSON", lambda p, i: sql(p, "UPDATE runs SET config = '{oops'")),
    ("file truncated to 1/3", file_bytes(lambda d: bytes(d[: len(d) // 3]))),
    ("file truncated to 100 bytes", file_bytes(lambda d: bytes(d[:100]))),
    ("file emptied (0 bytes)", file_bytes(lambda d: b"")),
    ("page garbage: a middle page", file_bytes(garbage_page(lambda n: n // 2))),
    ("page garbage: the last page", file_bytes(garbage_page(lambda n: n - 1))),
    ("page garbage: page 1 after the 100-byte header",
     file_bytes(header_edit(100, random.Random(1).randbytes(1948)))),
    ("header: magic string damaged", file_bytes(header_edit(0, b"SQLite format 2"))),
    ("header: page size field 0x0101", file_bytes(header_edit(16, b"\x01\x01"))),
    ("not a database: a text file", file_bytes(lambda d: b"hello, world\n" * 100)),
]  # fmt: skip


def _flip_last_frame(w: bytearray) -> bytes:
    w[-100] ^= 1
    return bytes(w)


def _wal_garbage(w: bytearray) -> bytes:
    mid = len(w) // 2
    w[mid : mid + 65536] = random.Random(2).randbytes(65536)
    return bytes(w[: len(w)])


WAL_CASES: list[tuple[str, Callable[[bytearray], bytes]]] = [
    ("WAL: one byte of the last frame flipped", _flip_last_frame),
    ("WAL: header salt damaged", header_edit(16, b"\x00\x00\x00\x00")),
    ("WAL: truncated mid-frame", lambda w: bytes(w[: len(w) - 30000])),
    ("WAL: 64 KiB of garbage in the middle", _wal_garbage),
]


def base_db(work: Path, data: Path) -> tuple[Path, list[int], Path]:
    """A run of three checkpoints (150, 300, 450 samples) over the first 450 of 600 digits, and
    a copy taken while its WAL still held the checkpoints a resume to 600 added."""
    db = work / "base.db"
    for p in work.glob("base.db*"):
        p.unlink()
    done = cli(["learn", "-s", str(data), "--db", str(db), "--run", RUN, "--limit", "450",
                "--checkpoint-every", "150", "--keep", "3", *MODEL, *QUIET], work)  # fmt: skip
    assert done.code == 0, done.err
    with closing(sqlite3.connect(db)) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM checkpoints ORDER BY id")]
    walled = work / "wal.db"
    shutil.copy(db, walled)
    # A reader's open snapshot keeps the copier from moving the new frames into the file; the
    # resume is then killed, so the checkpoints it added live only in the WAL.
    with closing(sqlite3.connect(walled, isolation_level=None)) as held:
        held.execute("BEGIN")
        held.execute("SELECT count(*) FROM runs").fetchall()
        grow = spawn(["learn", "--resume", "--db", str(walled), "--run", RUN, "--limit", "600",
                      "--checkpoint-every", "50", "--keep", "3", "--every", "50",
                      "--checkpoint-seconds", "0"], work)  # fmt: skip
        assert wait_for_row(pump(grow), 550), "the resume ended early"
        grow.send_signal(signal.SIGKILL)
        grow.wait(60)
        snap = work / "wal-snap.db"
        shutil.copy(walled, snap)
        shutil.copy(walled.with_name("wal.db-wal"), snap.with_name("wal-snap.db-wal"))
        held.execute("ROLLBACK")
    return db, ids, snap


def try_case(work: Path, db: Path, name: str) -> tuple[Outcome, Outcome, int | None]:
    verify = cli(["checkpoints", "verify", "--db", str(db)], work)
    resume = cli(["learn", "--resume", "--db", str(db), "--run", RUN, *QUIET], work)
    found = RESUMED.search(resume.err)
    return verify, resume, int(found.group(1)) if found else None


def corruption_section(work: Path, quick: bool, jobs: int = 1) -> Section:
    """Every damage case on a fresh copy: verify's and --resume's exit code and first line."""
    start = time.monotonic()
    work.mkdir(parents=True, exist_ok=True)
    data = mnist_csv(work / "mnist.csv", 600)
    db, ids, snap = base_db(work, data)
    probe = work / "probe.db"  # the newest checkpoint the undamaged WAL copy holds
    shutil.copy(snap, probe)
    shutil.copy(snap.with_name(snap.name + "-wal"), probe.with_name("probe.db-wal"))
    with closing(sqlite3.connect(probe)) as conn:
        wal_newest = conn.execute("SELECT max(id) FROM checkpoints").fetchone()[0]
    cases = CASES[::2] if quick else CASES
    wal_cases = WAL_CASES[:2] if quick else WAL_CASES

    def one(i: int, name: str, damage: Damage | None) -> list[object]:
        case = work / f"case{i}.db"
        for p in work.glob(f"case{i}.db*"):
            p.unlink()
        if damage is not None:
            shutil.copy(db, case)
            damage(case, ids)
            newest = ids[-1]
        else:
            shutil.copy(snap, case)
            wal = snap.with_name(snap.name + "-wal")
            edit = dict(wal_cases)[name]
            case.with_name(case.name + "-wal").write_bytes(edit(bytearray(wal.read_bytes())))
            newest = wal_newest
        verify, resume, used = try_case(work, case, name)
        went = "—" if used is None else f"{used} (newest {newest})"
        return [name, verify.code, code(verify.message, 110), resume.code,
                code(resume.message, 110), went,
                "TRACEBACK" if verify.traceback or resume.traceback else "none",
                used is not None and used < newest]  # fmt: skip

    todo = [*cases, *((n, None) for n, _ in wal_cases)]
    with ThreadPoolExecutor(jobs) as pool:  # each case its own file and processes
        done = list(pool.map(lambda c: one(c[0], *c[1]), enumerate(todo)))
    rows: list[list[object]] = [r[:-1] for r in done]
    fallbacks = sum(bool(r[-1]) for r in done)
    clean = sum(r[6] == "none" for r in done)
    total = len(rows)
    return Section(
        title="Damaged databases",
        intro=(
            f"A run of checkpoints {ids} (150, 300 and 450 of 600 MNIST digits, "
            f"`{' '.join(MODEL)} --keep 3`); each case damages a fresh copy, then runs "
            "`checkpoints verify` and `learn --resume` (which goes on to sample 600). Column "
            "edits hit the newest checkpoint unless named. *Resumed from* gives the checkpoint "
            "id --resume went on from, of the newest the file held. WAL cases damage the WAL of "
            "a copy taken while its last checkpoints were still only in the WAL."
        ),
        header=["damage", "verify exit", "verify says", "resume exit", "resume says",
                "resumed from id", "traceback"],
        rows=rows,
        verdict=(
            f"{total} cases; {fallbacks} resumed from an older intact checkpoint; "
            f"{clean} of {total} without a traceback"
        ),
        seconds=time.monotonic() - start,
    )  # fmt: skip


def _mount(args: list[str]) -> bool:
    done = subprocess.run(["mount", *args], capture_output=True)
    return done.returncode == 0


def disk_full_section(work: Path) -> Section:
    """Learn onto a 3 MiB tmpfs (a real full disk), then what is left of the file."""
    start = time.monotonic()
    work.mkdir(parents=True, exist_ok=True)
    data = mnist_csv(work / "mnist.csv", 600)
    small = work / "small"
    small.mkdir(exist_ok=True)
    if not _mount(["-t", "tmpfs", "-o", "size=3m", "tmpfs", str(small)]):
        return Section("Disk full", "Mounting a tmpfs was refused here: not measured.", ["-"])
    try:
        db = small / "full.db"
        args = ["learn", "-s", str(data), "--db", str(db), "--run", RUN, *MODEL, *QUIET,
                "--checkpoint-every", "100", "--keep", "0"]  # fmt: skip
        learn = cli(args, work)
        verify = cli(["checkpoints", "verify", "--db", str(db)], work)
        moved = work / "moved.db"
        for p in work.glob("moved.db*"):
            p.unlink()
        for p in small.glob("full.db*"):  # the file and its WAL, as a backup would
            shutil.copy(p, work / p.name.replace("full", "moved"))
        resume = cli(["learn", "--resume", "--db", str(moved), "--run", RUN, *QUIET], work)
        for p in small.iterdir():
            p.unlink()
        (small / "filler").write_bytes(b"\0" * (3 * 2**20 - 4096))
        fresh = cli([*args[:3], "--db", str(small / "new.db")], work)
    finally:
        subprocess.run(["umount", str(small)], check=False)
    cases = [("learn onto a 3 MiB tmpfs, checkpoint every 100", learn),
             ("checkpoints verify on the file left", verify),
             ("learn --resume from a copy on a roomy disk", resume),
             ("learn onto a tmpfs already full", fresh)]  # fmt: skip
    found = RESUMED.search(resume.err)
    return Section(
        title="Disk full",
        intro=(
            "A real full disk: a 3 MiB tmpfs mounted for the trial; `learn` over 600 MNIST "
            f"digits (`{' '.join(MODEL)}`) checkpointing every 100 samples, `--keep 0`."
        ),
        header=["attempt", "exit", "first line of message", "traceback"],
        rows=[
            [n, o.code, code(o.message), "TRACEBACK" if o.traceback else "none"] for n, o in cases
        ],  # fmt: skip
        verdict=(
            f"the full disk ends learn with exit {learn.code}; the file left verifies with exit "
            f"{verify.code}; the copy resumes from checkpoint "
            f"{found.group(1) if found else 'none'} with exit {resume.code}"
        ),
        seconds=time.monotonic() - start,
    )


def read_only_section(work: Path) -> Section:
    """A database on a read-only bind mount: what reads work, what writes say."""
    start = time.monotonic()
    work.mkdir(parents=True, exist_ok=True)
    data = mnist_csv(work / "mnist.csv", 600)
    db, _, _ = base_db(work, data)
    media = work / "media"
    shutil.rmtree(media, ignore_errors=True)
    media.mkdir()
    shutil.copy(db, media / "runs.db")
    ro = work / "ro"
    ro.mkdir(exist_ok=True)
    if not (_mount(["--bind", str(media), str(ro)]) and _mount(["-o", "remount,bind,ro", str(ro)])):
        subprocess.run(["umount", str(ro)], check=False)
        return Section("Read-only media", "Bind mounts were refused here: not measured.", ["-"])
    target = str(ro / "runs.db")
    try:
        cases = [
            ("runs", cli(["runs", "--db", target], work)),
            ("checkpoints", cli(["checkpoints", "--db", target], work)),
            ("checkpoints verify", cli(["checkpoints", "verify", "--db", target], work)),
            ("eval", cli(["eval", "-s", str(data), "--db", target, "--limit", "100"], work)),
            ("predict", cli(["predict", "-s", str(data), "--db", target], work)),
            ("learn --resume", cli(["learn", "--resume", "--db", target, *QUIET], work)),
            ("learn (a new run)", cli(["learn", "-s", str(data), "--db", target, *MODEL], work)),
            ("learn into a new file", cli(["learn", "-s", str(data), "--db",
                                           str(ro / "new.db"), *MODEL], work)),
        ]  # fmt: skip
    finally:
        subprocess.run(["umount", str(ro)], check=False)
    reads = sum(o.code == 0 for _, o in cases[:5])
    refused = sum(o.code == 1 and o.message.startswith("Error:") for _, o in cases[5:])
    return Section(
        title="Read-only media",
        intro="The base database on a read-only bind mount (`mount -o remount,bind,ro`).",
        header=["command", "exit", "first line of message", "traceback"],
        rows=[
            [n, o.code, code(o.message), "TRACEBACK" if o.traceback else "none"] for n, o in cases
        ],  # fmt: skip
        verdict=f"{reads} of 5 reading commands work; {refused} of 3 writes refused with Error:",
        seconds=time.monotonic() - start,
    )
