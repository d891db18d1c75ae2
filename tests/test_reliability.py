"""The fault trials' own pieces (benchmarks/faults.py, benchmarks/reliability*.py)."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from benchmarks.faults import Outcome, Section, code, message_line, wal_state
from benchmarks.reliability import anchor, render
from benchmarks.reliability_damage import RUN, base_db, flip_column, flip_text, try_case
from benchmarks.reliability_load import fuzz_one

# A writer whose page cache spills an open transaction's pages into the WAL, then waits.
SPILL = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA journal_mode=wal")
conn.execute("PRAGMA cache_size=2")
conn.execute("CREATE TABLE t (b BLOB)")
conn.execute("BEGIN")
for _ in range(50):
    conn.execute("INSERT INTO t VALUES (randomblob(8000))")
if sys.argv[2] == "commit":
    conn.execute("COMMIT")
print("written", flush=True)
sys.stdin.readline()
"""


def _killed_writer(tmp_path: Path, mode: str) -> Path:
    db = tmp_path / f"{mode}.db"
    child = subprocess.Popen([sys.executable, "-c", SPILL, str(db), mode], text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    assert child.stdout is not None and child.stdout.readline() == "written\n"
    child.send_signal(signal.SIGKILL)
    assert child.wait(30) == -signal.SIGKILL
    return db.with_name(db.name + "-wal")


def test_wal_state_tells_a_cut_transaction_from_a_committed_one(tmp_path: Path) -> None:
    cut = wal_state(_killed_writer(tmp_path, "open"))
    assert (
        cut.mid_write and cut.commits == 1 and cut.frames - 2 == cut.uncommitted > 10
    )  # 2: CREATE
    done = wal_state(_killed_writer(tmp_path, "commit"))
    assert not done.mid_write and done.commits == 2 and done.frames > 10
    wal = tmp_path / "commit.db-wal"
    data = bytearray(wal.read_bytes())
    page = int.from_bytes(data[8:12], "big")
    data[32 + 3 * (24 + page) + 100] ^= 1  # the 4th frame's page: it and all after it are void
    wal.write_bytes(bytes(data))
    assert wal_state(wal).frames == 3
    assert wal_state(tmp_path / "absent-wal").frames == 0


def test_message_line_prefers_the_error() -> None:
    err = "learning x\nnote: a\nError: it broke (fix it)\nwarning: b\n"
    assert message_line(err) == "Error: it broke (fix it)"
    assert Outcome(0, "accuracy 0.9\n", "progress\ndone: 3 samples\n").message == (
        "done: 3 samples"
    )
    assert Outcome(1, "", "Traceback (most recent call last):\nKeyError: 'x'\n").traceback


def test_a_section_renders_as_a_markdown_table() -> None:
    rows: list[list[object]] = [["a|b", 1, True], [code("Error: `x`"), 1234567, 0.12345]]
    s = Section("Two writers", "Intro.", ["attempt", "exit", "ok"], rows, "1 of 2", 3.4)
    text = s.markdown()
    assert "| attempt | exit | ok |\n|---|---|---|\n| a\\|b | 1 | yes |" in text
    assert "| `Error: 'x'` | 1,234,567 | 0.123 |" in text and text.endswith("1 of 2 (3 s)\n")
    doc = render([s], "python -m benchmarks.reliability --quick", "then", ["1.00", "2.00"])
    assert "| [Two writers](#two-writers) | 1 of 2 |" in doc
    assert "- command: `python -m benchmarks.reliability --quick`" in doc
    assert "at the start: 1.00; at the end: 2.00" in doc and f"{os.cpu_count()} CPUs" in doc
    assert anchor("kill -9 during learning") == "kill--9-during-learning"


def test_flip_text_changes_one_value_and_keeps_json_valid() -> None:
    assert flip_text("[0,1]") == "[0,2]"
    assert flip_text('{"a": 9}') == '{"a": 0}'
    assert flip_text("abcd") == "abxd"


def test_fuzzed_json_lines_account_for_every_record(tmp_path: Path) -> None:
    row = fuzz_one(tmp_path, "jsonl", 120, seed=4)
    fmt, lines, records, samples, learned, rejected, read, check, _, exit_, trace, _ = row
    assert (fmt, lines, exit_, trace) == ("jsonl", 120, 0, "none")
    assert isinstance(learned, int) and isinstance(rejected, int) and 0 < learned < records
    assert rejected > 10 and samples + rejected == read == records and check is True  # type: ignore[operator]


@pytest.mark.slow
def test_a_damaged_newest_checkpoint_is_reported_and_resume_falls_back(tmp_path: Path) -> None:
    from benchmarks.faults import mnist_csv

    db, ids, _ = base_db(tmp_path, mnist_csv(tmp_path / "mnist.csv", 600))
    assert len(ids) == 3
    case = tmp_path / "case.db"
    shutil.copy(db, case)
    flip_column("position")(case, ids)
    verify, resume, used = try_case(tmp_path, case, "position")
    assert verify.code == 1 and verify.message.startswith(f"damaged: checkpoint {ids[2]} ")
    assert resume.code == 0 and used == ids[1], resume.err
    assert resume.message.startswith(f"warning: checkpoint {ids[2]} of run '{RUN}'")
    with closing(sqlite3.connect(case)) as conn:
        assert conn.execute("SELECT max(samples) FROM checkpoints").fetchone()[0] == 600


@pytest.mark.slow
def test_a_full_disk_is_an_error_and_leaves_a_file_that_resumes(tmp_path: Path) -> None:
    """A real 3 MiB tmpfs (root only; skipped where mounting is refused)."""
    from benchmarks.reliability_damage import disk_full_section

    section = disk_full_section(tmp_path)
    if section.header == ["-"]:
        pytest.skip(section.intro)
    (learn, verify, resume, fresh) = section.rows
    assert learn[1] == 1 and "disk is full" in str(learn[2]) and learn[3] == "none"
    assert verify[1] == 0 and "sound" in str(verify[2])
    assert resume[1] == 0 and fresh[1] == 1 and "Error:" in str(fresh[2])


def test_write_lock_holder_sees_an_open_write_transaction(tmp_path: Path) -> None:
    from benchmarks.faults import write_lock_holder

    hold = (
        "import sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "c.execute('PRAGMA journal_mode=wal'); c.execute('CREATE TABLE t (a)')\n"
        "c.execute('BEGIN IMMEDIATE'); c.execute('INSERT INTO t VALUES (1)')\n"
        "print('open', flush=True); sys.stdin.readline()\n"
        "c.execute('COMMIT'); print('done', flush=True); sys.stdin.readline()\n"
    )
    db = tmp_path / "x.db"
    child = subprocess.Popen([sys.executable, "-c", hold, str(db)], text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline() == "open\n"
        assert write_lock_holder(tmp_path / "x.db-shm") == child.pid
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline() == "done\n"
        assert write_lock_holder(tmp_path / "x.db-shm") is None
        assert write_lock_holder(tmp_path / "absent-shm") is None
    finally:
        child.kill()
        child.wait(30)


@pytest.mark.slow
def test_a_kill_inside_a_checkpoint_write_resumes_to_the_same_model(tmp_path: Path) -> None:
    from benchmarks.faults import mnist_csv
    from benchmarks.reliability_crash import kill_trial, reference

    data = mnist_csv(tmp_path / "mnist.csv", 200)
    want, samples = reference(tmp_path, data)
    trial = kill_trial(tmp_path, data, 1, 100, None, want)
    assert samples == 200 and trial.in_write and trial.survived
    # killed while saving sample 100 (or one just after): the one before it is kept
    assert trial.resumed_from is not None and 99 <= trial.resumed_from < 200
