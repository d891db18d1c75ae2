"""Damaged and read-only databases, through the store and the CLI (issue 12, defect 7).

Real files damaged the way disks and copies damage them: cut short, or one page overwritten
with random bytes (the page found with SQLite's ``dbstat``); real read-only files, through
SQLite's ``mode=ro`` and through a process that cannot write them (tests run as root, whom file
modes do not stop, so that process runs as ``nobody``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.app import app
from spela_stream.errors import CheckpointDamagedError, CheckpointError
from spela_stream.model import SpelaMLP
from spela_stream.prequential import Prequential
from storage import CheckpointStore
from storage.session import Session

runner = CliRunner()
READERS = [["runs"], ["checkpoints"], ["eval", "--source", "{csv}"], ["plot", "-o", "{png}"]]


def _build(folder: Path) -> tuple[Path, Path]:
    """A database of a real run with three checkpoints, and the CSV it learned."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(300, 6)), rng.integers(0, 3, 300)
    csv = folder / "s.csv"
    lines = (",".join(f"{v:.4f}" for v in x) + f",{c}\n" for x, c in zip(X, y, strict=True))
    csv.write_text("".join(lines))
    db = folder / "runs.db"
    with CheckpointStore(db) as store:
        loop = Prequential(SpelaMLP(hidden=(64,), seed=0))
        session = Session(store, store.create_run("w", {}, str(csv)), loop, str(csv))
        for k in range(3):
            part = slice(k * 100, (k + 1) * 100)
            rows = zip(X[part], y[part].tolist(), strict=True)
            list(loop.run(rows, every=50))
            session.save()
    return db, csv


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _build(tmp_path_factory.mktemp("built"))


@pytest.fixture
def good(built: tuple[Path, Path], tmp_path: Path) -> Path:
    db = tmp_path / "runs.db"
    shutil.copy(built[0], db)
    return db


def _page(db: Path, name: str, kind: str) -> int:
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT max(pageno) FROM dbstat WHERE name = ? AND pagetype = ?", (name, kind)
        ).fetchone()
    assert row[0], f"no {kind} page of {name} in {db}"
    return int(row[0])


def _garble(db: Path, page: int) -> None:
    """Overwrite one page (page 1: past its 100-byte file header) with random bytes."""
    size = sqlite3.connect(db).execute("PRAGMA page_size").fetchone()[0]
    skip = 100 if page == 1 else 0
    with db.open("r+b") as f:
        f.seek((page - 1) * size + skip)
        f.write(np.random.default_rng(page).bytes(size - skip))


def _cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    assert not (result.exception and not isinstance(result.exception, SystemExit)), result.output
    return result.exit_code, result.output


DAMAGE = [
    ("tensors", "overflow"),
    ("tensors", "leaf"),
    ("checkpoints", "leaf"),
    ("checkpoints", "overflow"),
    ("history", "leaf"),
    ("runs", "leaf"),
]


@pytest.mark.parametrize(("table", "kind"), DAMAGE, ids=[f"{t}-{k}" for t, k in DAMAGE])
def test_a_garbled_page_is_reported_by_listing_and_verify(good: Path, table: str, kind: str):
    _garble(good, _page(good, table, kind))
    code, out = _cli("checkpoints", "--db", str(good))
    assert code == 1, out
    assert out.startswith(f"Error: {good} is damaged (SQLite quick_check"), out
    assert "not a spela-stream database" not in out and "use another --db" not in out
    code, out = _cli("checkpoints", "verify", "--db", str(good))
    assert code == 1, out
    assert "Error:" not in out and "damaged: SQLite " in out, out
    assert out.splitlines()[-1].startswith(f"{good}: DAMAGED;"), out
    assert "\ufffd" not in out  # SQLite quoted a garbled column raw: described, not quoted
    assert all(line.isprintable() for line in out.splitlines()), out
    with CheckpointStore(good, create=False, readonly=True) as store:
        report = store.verify()  # a report, not an exception
        assert not report.sound and report.integrity


def test_verify_reports_a_malformed_btree_page_it_walks_into(good: Path) -> None:
    """quick_check and integrity_check fail on the same page: verify still names what it can."""
    _garble(good, _page(good, "tensors", "leaf"))
    with CheckpointStore(good, create=False, readonly=True) as store:
        report = store.verify("w")
    assert report.checkpoints == 3 and report.intact < 3
    assert any("malformed" in line for line in report.integrity + report.damaged)


def test_a_garbled_schema_page_is_damage_everywhere(good: Path, built: tuple[Path, Path]) -> None:
    _garble(good, 1)
    code, out = _cli("checkpoints", "verify", "--db", str(good))
    assert code == 1 and "Error:" not in out, out
    assert out.splitlines()[-1] == f"{good}: DAMAGED; SQLite cannot read it", out
    for cmd in READERS:
        args = [a.format(csv=built[1], png=good.with_suffix(".png")) for a in cmd]
        code, out = _cli(*args, "--db", str(good))
        assert code == 1 and out.startswith(f"Error: {good} is damaged"), (cmd, out)


def test_a_truncated_file_is_damage_in_every_reader(good: Path, built: tuple[Path, Path]) -> None:
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 3])
    for cmd in [*READERS, ["checkpoints", "verify"]]:
        args = [a.format(csv=built[1], png=good.with_suffix(".png")) for a in cmd]
        code, out = _cli(*args, "--db", str(good))
        assert code == 1, (cmd, out)
        assert "damaged" in out.lower() and "not a spela-stream" not in out, (cmd, out)


def test_a_garbled_file_header_of_ours_is_damage_not_foreign(good: Path) -> None:
    with good.open("r+b") as f:
        f.write(b"\x00" * 100)  # SQLite's magic and header gone; our tables still inside
    with pytest.raises(CheckpointDamagedError, match="is damaged"):
        CheckpointStore(good, create=False)
    code, out = _cli("runs", "--db", str(good))
    assert code == 1 and out.startswith(f"Error: {good} is damaged"), out


def test_somebody_elses_files_are_not_called_damaged(tmp_path: Path) -> None:
    text = tmp_path / "notes.db"
    text.write_text("hello\n" * 100)
    foreign = tmp_path / "other.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE t (x)")
    for path in (text, foreign):
        for cmd in (["runs"], ["checkpoints"], ["checkpoints", "verify"]):
            code, out = _cli(*cmd, "--db", str(path))
            assert code == 1 and f"{path} is not a spela-stream database" in out, (cmd, out)
            assert "damaged" not in out, (cmd, out)


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("runs.db*")}


def test_readers_write_nothing(good: Path, built: tuple[Path, Path], tmp_path: Path) -> None:
    """Listing, eval and plot open read-only: even an older file is left as it was."""
    conn = sqlite3.connect(good)  # what a spela-stream before leases wrote
    conn.execute("DROP TABLE leases")
    conn.commit()
    conn.close()
    assert sorted(p.name for p in good.parent.glob("runs.db*")) == ["runs.db"]
    before = _digest(good.parent)
    png = tmp_path / "out" / "c.png"
    png.parent.mkdir()
    for cmd in [*READERS, ["checkpoints", "verify"]]:
        args = [a.format(csv=built[1], png=png) for a in cmd]
        code, out = _cli(*args, "--db", str(good))
        assert code == 0, (cmd, out)
        # The file is unchanged: no migration. SQLite leaves its WAL index (-shm) and an
        # empty -wal beside a WAL file read with mode=ro; the next writer removes them.
        assert _digest(good.parent)["runs.db"] == before["runs.db"], cmd
        wal = good.with_name("runs.db-wal")
        assert not wal.exists() or wal.stat().st_size == 0, cmd
    with sqlite3.connect(good) as conn:
        assert "leases" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}


@pytest.fixture
def unwritable(built: tuple[Path, Path]) -> Iterator[tuple[Path, Path]]:
    """A copy in a folder and file nobody but root may write: 0555 and 0444."""
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to run a reader as nobody")
    top = Path(tempfile.mkdtemp(prefix="spela-ro-"))
    try:
        top.chmod(0o755)
        folder = top / "ro"
        folder.mkdir()
        shutil.copy(built[0], folder / "runs.db")
        shutil.copy(built[1], top / "s.csv")
        (top / "out").mkdir(mode=0o777)
        (top / "out").chmod(0o777)
        (folder / "runs.db").chmod(0o444)
        folder.chmod(0o555)
        yield folder / "runs.db", top
    finally:
        folder.chmod(0o755)
        shutil.rmtree(top)


def test_a_read_only_file_in_a_read_only_folder_is_read(unwritable: tuple[Path, Path]) -> None:
    """As nobody, for whom the 0444 file and 0555 folder are really read-only: every reader
    works (one process runs them all, through CliRunner), and learn says why it cannot."""
    db, top = unwritable
    before = _digest(db.parent)
    commands = [
        [a.format(csv=top / "s.csv", png=top / "out" / "c.png") for a in cmd] + ["--db", str(db)]
        for cmd in [*READERS, ["checkpoints", "verify"]]
    ]
    script = (
        "import json, sys\n"
        "from typer.testing import CliRunner\n"
        "from cli.app import app\n"
        "runner = CliRunner()\n"
        "for args in json.loads(sys.argv[1]):\n"
        "    r = runner.invoke(app, args)\n"
        "    print(json.dumps([args[0], r.exit_code, r.output[-300:]]))\n"
    )
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run(
        [*as_nobody, "-c", script, json.dumps(commands)],
        capture_output=True, text=True, env=env, cwd=top, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(results) == len(commands), done.stdout
    for name, code, out in results:
        assert code == 0 and "Error" not in out, (name, out)
    assert _digest(db.parent) == before
    learn = subprocess.run(
        [*as_nobody, "-c", "from cli.app import app; app(prog_name='spela-stream')", "learn",
         "--source", str(top / "s.csv"), "--resume", "--db", str(db)],
        capture_output=True, text=True, env=env, cwd=top, timeout=120,
    )  # fmt: skip
    assert learn.returncode == 1, (learn.stdout, learn.stderr)
    assert "not a spela-stream" not in learn.stderr and "damaged" not in learn.stderr
    assert "read-only" in learn.stderr or "readonly" in learn.stderr, learn.stderr


def test_a_store_opened_read_only_refuses_to_write(good: Path) -> None:
    with CheckpointStore(good, create=False, readonly=True) as store:
        assert store.readonly and len(store.checkpoints("w")) == 3
        with pytest.raises(CheckpointError, match="open read-only"):
            store.create_run("x", {}, "s.csv")
