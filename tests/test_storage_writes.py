"""What a checkpoint costs the disk: bytes written per save, the WAL and the file (defect 14).

Bytes are counted by SQLite itself (the frames the commit appended to the WAL, each a page plus
its 24-byte header) and checked against the kernel's count of bytes this process wrote.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from benchmarks.write_bench import MODELS, Figures, measure, page_size
from storage import CheckpointStore
from storage.schema import PAGE_SIZE

BY_NAME = {m.name: m for m in MODELS}


def _check_meter(f: Figures) -> None:
    """SQLite's frame count and the kernel's byte count agree: the meter measures writes."""
    assert f.commit > f.payload  # every blob byte goes through the WAL
    assert f.commit + f.copy <= f.syscall <= 1.1 * (f.commit + f.copy)


@pytest.mark.parametrize("name", ["44 KB", "54 KB", "4.4 MB"])
def test_a_checkpoint_writes_at_most_twice_its_size(tmp_path: Path, name: str) -> None:
    f = measure(tmp_path / "runs.db", BY_NAME[name], size=PAGE_SIZE, checkpoints=7)
    _check_meter(f)
    assert f.ratio("commit") <= 2.0, f
    # The copy back into the file writes each page once more, never more than that.
    assert f.copy <= f.commit


def test_older_64_kib_pages_amplify_and_still_work(tmp_path: Path) -> None:
    """A file made with the 64 KiB pages of earlier versions: the meter sees 13x and more."""
    f = measure(tmp_path / "old.db", BY_NAME["54 KB"], size=65536, checkpoints=6)
    _check_meter(f)
    assert f.ratio("commit") > 10
    with CheckpointStore(tmp_path / "old.db", create=False, readonly=True) as store:
        assert store.db.conn.execute("PRAGMA page_size").fetchone()[0] == 65536  # as it was
        assert store.verify().sound and len(store.checkpoints("w")) == 3


def test_an_older_file_is_repaged_when_opened_to_write(tmp_path: Path) -> None:
    """A learn on a 64 KiB-page file rewrites it once with small pages; nothing is lost."""
    path = tmp_path / "old.db"
    measure(path, BY_NAME["44 KB"], size=65536, checkpoints=5)
    with CheckpointStore(path, create=False, readonly=True) as store:
        before = [(c.id, c.samples, c.bytes) for c in store.checkpoints("w")]
        state = store.load("w").state
    other = sqlite3.connect(path)  # another reader holds the file: no repaging, no waiting
    other.execute("SELECT count(*) FROM tensors").fetchone()
    with CheckpointStore(path, create=False) as store:
        assert store.db.conn.execute("PRAGMA page_size").fetchone()[0] == 65536
    other.close()
    with CheckpointStore(path, create=False) as store:
        conn = store.db.conn
        assert conn.execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert [(c.id, c.samples, c.bytes) for c in store.checkpoints("w")] == before
        assert store.verify().sound
        again = store.load("w").state
        assert all(np.array_equal(again[k], v) for k, v in state.items() if hasattr(v, "shape"))
    assert path.stat().st_size < 300_000  # from 1.1 MB: three checkpoints in small pages


def test_the_wal_and_the_file_stop_growing(tmp_path: Path) -> None:
    """With --keep, freed pages are reused and the WAL starts over: sizes level off."""
    path = tmp_path / "runs.db"
    wal = tmp_path / "runs.db-wal"
    rng = np.random.default_rng(0)
    sizes: list[tuple[int, int]] = []
    with CheckpointStore(path) as store:
        run = store.create_run("w", {}, "s.csv")
        for i in range(12):
            state = {"w": rng.standard_normal((100, 100)).astype(np.float32), "labels": [0, 1]}
            store.save(run, state=state, samples=i, source="s.csv", position=i, where="@",
                       history=[{"samples": i}], keep=2)  # fmt: skip
            copy = store.settle()
            assert copy is not None and copy.complete
            sizes.append((path.stat().st_size, wal.stat().st_size))
    files, wals = zip(*sizes, strict=True)
    assert max(files[4:]) == files[4], files  # two checkpoints' pages, reused from then on
    assert files[4] < 3.5 * 40_000 + 16 * PAGE_SIZE
    # The first save's WAL (tables, run and checkpoint) is the largest: rewritten in place after.
    assert max(wals) == wals[0] < 3 * 40_000, wals
    assert not wal.exists() or wal.stat().st_size == 0  # folded in at close


def test_new_files_have_small_pages_and_no_secure_delete(tmp_path: Path) -> None:
    with page_size(PAGE_SIZE), CheckpointStore(tmp_path / "runs.db") as store:
        conn = store.db.conn
        assert conn.execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE == 2048
        assert conn.execute("PRAGMA secure_delete").fetchone()[0] == 0
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0  # no vacuum moves pages
    with sqlite3.connect(tmp_path / "runs.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_wal_held_back_by_a_reader_shrinks_once_it_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader's snapshot keeps the copier from finishing; after it, the WAL is cut back."""
    import storage.schema

    monkeypatch.setattr(storage.schema, "WAL_LIMIT", 100_000)
    path, wal = tmp_path / "runs.db", tmp_path / "runs.db-wal"
    rng = np.random.default_rng(0)
    with CheckpointStore(path) as store:
        run = store.create_run("w", {}, "s.csv")

        def save(i: int) -> None:
            state = {"w": rng.standard_normal((100, 100)).astype(np.float32)}
            store.save(run, state=state, samples=i, source="s.csv", position=i, where="@", keep=2)

        save(0)
        store.settle()
        reader = sqlite3.connect(path, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM tensors").fetchone()  # holds its snapshot
        for i in range(1, 6):
            save(i)
            copy = store.settle()
            assert copy is not None and not copy.complete
        held = wal.stat().st_size
        assert held > 5 * 40_000  # five checkpoints' frames: nothing could be copied over
        reader.execute("COMMIT")
        reader.close()
        save(6)
        copy = store.settle()
        assert copy is not None and copy.complete
        save(7)  # starts the WAL over, and cuts the file back to the limit
        store.settle()
        assert wal.stat().st_size <= 100_000 < held
