"""The SQLite checkpoint store: round trips, errors, retention, atomicity, crash safety."""

from __future__ import annotations

import doctest
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import storage.store
from spela_stream.errors import CheckpointDamagedError, CheckpointError
from storage import SCHEMA, CheckpointStore
from storage.schema import PAGE_SIZE

ROOT = Path(__file__).resolve().parents[1]


def _save(store: CheckpointStore, run: str, state: dict[str, Any], n: int, **kw: Any) -> int:
    """Save ``state`` as the checkpoint after ``n`` samples."""
    return store.save(run, state=state, samples=n, source="s.csv", position=n, where=f"@{n}", **kw)


def _count(path: Path, sql: str) -> Any:
    """One value, read with nothing but the sqlite3 module."""
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchone()[0]


def _typed(value: Any) -> Any:
    """The value with the type of every leaf made visible, so 1, 1.0 and True differ."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    return (type(value).__name__, value)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[CheckpointStore]:
    store = CheckpointStore(tmp_path / "runs.db")
    yield store
    store.close()


ARRAYS = {
    "f32": np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
    "f64_0d": np.array(np.pi),
    "i64_0d": np.asarray(60_000, dtype=np.int64),
    "empty": np.zeros((0, 3), dtype=np.int64),
    "empty_f32": np.array([], dtype=np.float32),
    "u8": np.arange(256, dtype=np.uint8),
    "bool": np.array([[True, False], [False, True]]),
    "f16": np.array([1.5, -0.0, np.inf], dtype=np.float16),
    "c64": np.array([1 + 2j, -3j], dtype=np.complex64),
    "nan": np.array([np.nan, -np.nan, -0.0, 1e-310]),
    "big_endian": np.arange(5, dtype=">f8") * 0.1,
    "strided": np.arange(60, dtype=np.int32).reshape(6, 10)[::2, 1::3],
    "transposed": np.arange(6, dtype=np.int16).reshape(2, 3).T,
    "text": np.array(["cat", "dog", ""]),
    "i8_3d": np.arange(-24, 24, 2, dtype=np.int8).reshape(2, 3, 4),
}


def test_arrays_round_trip_bit_identical(db: CheckpointStore) -> None:
    run = db.create_run(None, {}, "s.csv")
    _save(db, run, dict(ARRAYS), 1)
    state = db.load(run).state
    assert list(state) == list(ARRAYS)
    for key, want in ARRAYS.items():
        got = state[key]
        assert got.shape == want.shape, key
        assert got.dtype == want.dtype.newbyteorder("="), key
        assert got.tobytes() == want.astype(want.dtype.newbyteorder("=")).tobytes(), key
        assert got.flags.writeable and got.flags.c_contiguous, key


def test_json_values_round_trip_with_their_types(db: CheckpointStore) -> None:
    state = {
        "format": "spela-stream.model/1",
        "config": {"hidden": [256, 256], "lr": 0.01, "device": None, "nested": {"a": [1, [2.0]]}},
        "labels": [1, True, "1", 0, False, "0", "UP", 2.5],
        "feature_names": None,
        "n_features": 784,
        "n_learned": 0,
        "text": "naïve ✓",
        "tuple": (1, 2),  # allowed; comes back as a list
        "np_float": np.float64(0.25),  # a float subclass: comes back as a float
        "w": np.ones(3, dtype=np.float32),
    }
    metrics = {"summary": {"accuracy": 0.5}, "confusion": {"1": {"True": 3}}, "none": None}
    run = db.create_run("r", {"seed": 0}, "s.csv")
    _save(db, run, state, 3, metrics=metrics)
    ck = db.load(run)
    got = {k: v for k, v in ck.state.items() if k != "w"}
    want = {k: v for k, v in state.items() if k != "w"} | {"tuple": [1, 2], "np_float": 0.25}
    assert _typed(got) == _typed(want)
    assert _typed(ck.metrics) == _typed(metrics)
    assert type(ck.state["np_float"]) is float


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({1: "a"}, "state['bad']"),
        ({"x": [1, {2: 3}]}, "state['bad']['x'][1]"),
        (np.int64(3), "state['bad']"),
        ({"s": {1, 2}}, "state['bad']['s']"),
        ([np.ones(2)], "state['bad'][0]"),
    ],
)
def test_values_json_would_change_are_refused(db: CheckpointStore, value: Any, where: str) -> None:
    run = db.create_run(None, {}, "s.csv")
    with pytest.raises(CheckpointError, match=re.escape(where)):
        _save(db, run, {"bad": value}, 1)
    assert db.checkpoints(run) == []


def test_object_arrays_are_refused(db: CheckpointStore) -> None:
    run = db.create_run(None, {}, "s.csv")
    with pytest.raises(CheckpointError, match=r"state\['o'\].*dtype object"):
        _save(db, run, {"o": np.array([1, "a"], dtype=object)}, 1)


def test_runs_are_created_listed_and_updated(db: CheckpointStore) -> None:
    assert db.runs() == [] and db.latest_run() is None
    assert db.create_run(None, {"hidden": [8]}, "a.csv") == "run-1"
    assert db.create_run("mine", {}, "b.csv") == "mine"
    assert db.create_run(None, {}, "c.csv") == "run-2"
    assert [r.name for r in db.runs()] == ["run-1", "mine", "run-2"]
    latest = db.latest_run()
    assert latest is not None and latest.name == "run-2"
    _save(db, "run-1", {"n": 1}, 40, metrics={"summary": {"accuracy": 0.75}, "big": [0] * 9})
    _save(db, "run-1", {"n": 2}, 50, metrics={"no_summary": 1})  # keeps the last summary
    info = db.run("run-1")
    assert db.latest_run() == info
    assert (info.config, info.source, info.samples, info.checkpoints) == (
        {"hidden": [8]},
        "a.csv",
        50,
        2,
    )
    assert info.summary == {"accuracy": 0.75}
    created, updated = datetime.fromisoformat(info.created), datetime.fromisoformat(info.updated)
    assert created.utcoffset() == timedelta(0)
    assert updated > created
    assert db.run("mine").summary is None and db.run("mine").checkpoints == 0


def test_duplicate_run(db: CheckpointStore, tmp_path: Path) -> None:
    db.create_run("x", {}, "s.csv")
    msg = f"run 'x' already exists in {tmp_path / 'runs.db'} "
    msg += "(use --resume to continue it, or another --run)"
    with pytest.raises(CheckpointError) as err:
        db.create_run("x", {}, "t.csv")
    assert str(err.value) == msg
    assert db.run("x").source == "s.csv"


def test_missing_run_names_the_db_and_lists_runs(db: CheckpointStore, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no runs yet"):
        db.run("nope")
    for i in range(12):
        db.create_run(f"r{i}", {}, "s.csv")
    with pytest.raises(CheckpointError) as err:
        db.run("nope")
    text = str(err.value)
    assert "'nope'" in text and str(tmp_path / "runs.db") in text and "and 2 more" in text
    assert sum(f"r{i}" in text.replace(",", " ").split() for i in range(12)) == 10
    for call in (
        lambda: db.load("nope"),
        lambda: db.history("nope"),
        lambda: db.checkpoints("nope"),
    ):
        with pytest.raises(CheckpointError, match="no run 'nope'"):
            call()
    with pytest.raises(CheckpointError, match="no run 'nope'"):
        _save(db, "nope", {"w": np.ones(2)}, 1)
    assert db.checkpoints() == []


def test_missing_db_without_create(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError) as err:
        CheckpointStore("runs.db", create=False)
    assert str(err.value) == "runs.db: no such database (learn with --db runs.db first)"
    assert not (tmp_path / "runs.db").exists()
    CheckpointStore("runs.db").close()
    with CheckpointStore("runs.db", create=False) as store:
        assert store.runs() == []


def test_foreign_sqlite_db_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE people (name TEXT)")
    before = path.read_bytes()
    for create in (True, False):
        with pytest.raises(CheckpointError, match=f"{path} is not a spela-stream database"):
            CheckpointStore(path, create=create)
    assert path.read_bytes() == before
    assert _count(path, "PRAGMA journal_mode") == "delete"


def test_foreign_meta_table_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE meta (k TEXT, v TEXT)")
    with pytest.raises(CheckpointError, match="is not a spela-stream database"):
        CheckpointStore(path)


def test_not_an_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "noise.db"
    path.write_bytes(np.random.default_rng(0).bytes(8192))
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match=f"{path} is not a spela-stream database"):
        CheckpointStore(path)
    assert path.read_bytes() == before
    with pytest.raises(CheckpointError, match="is a directory"):
        CheckpointStore(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        CheckpointStore(tmp_path / "nowhere" / "runs.db")


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    CheckpointStore(path).close()
    assert _count(path, "SELECT value FROM meta WHERE key = 'schema'") == SCHEMA
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = 'spela-stream.store/2' WHERE key = 'schema'")
    with pytest.raises(CheckpointError, match="newer spela-stream"):
        CheckpointStore(path)


def test_keep_deletes_old_checkpoints_and_their_tensors(db: CheckpointStore) -> None:
    run, other = db.create_run(None, {}, "s.csv"), db.create_run(None, {}, "s.csv")
    state = {"a": np.ones(3), "b": np.zeros(2, np.float32), "n": 0}
    _save(db, other, state, 1)
    ids = [_save(db, run, state | {"n": k}, k, keep=2, history=[{"samples": k}]) for k in range(5)]
    assert [c.id for c in db.checkpoints(run)] == ids[-2:]
    assert [c.run for c in db.checkpoints()] == [other, run, run]
    assert db.load(run).state["n"] == 4 and db.load(run, ids[-2]).state["n"] == 3
    assert _count(db.path, "SELECT COUNT(*) FROM checkpoints") == 3
    assert _count(db.path, "SELECT COUNT(*) FROM tensors") == 3 * 2
    assert _count(db.path, "SELECT COUNT(*) FROM history") == 5  # history is never pruned
    with pytest.raises(CheckpointError, match="keep must be at least 1"):
        _save(db, run, state, 9, keep=0)


def test_checkpoint_info(db: CheckpointStore) -> None:
    run = db.create_run(None, {}, "s.csv")
    state = {"w": np.ones((4, 5), np.float32), "b": np.ones(5), "labels": [1, 2]}
    cid = db.save(run, state=state, samples=7, source="t.csv", position=9, where="t.csv line 10")
    (info,) = db.checkpoints(run)
    assert (info.id, info.run, info.samples, info.source) == (cid, run, 7, "t.csv")
    assert (info.position, info.where, info.tensors) == (9, "t.csv line 10", 2)
    assert info.bytes == 80 + 40 + len('{"labels":[1,2]}')
    assert db.load(run).info == info


def test_load_errors_list_the_runs_checkpoints(db: CheckpointStore) -> None:
    a, b = db.create_run("a", {}, "s.csv"), db.create_run("b", {}, "s.csv")
    with pytest.raises(CheckpointError, match="run 'a' in .* has no checkpoints yet"):
        db.load(a)
    ids_a = [_save(db, a, {"n": k}, k) for k in range(3)]
    id_b = _save(db, b, {"n": 9}, 9)
    assert db.load(a, ids_a[0]).state == {"n": 0}
    with pytest.raises(CheckpointError) as err:
        db.load(a, id_b)
    assert f"no checkpoint {id_b} in run 'a'" in str(err.value)
    assert "3, 2, 1" in str(err.value)


def test_history_rows_append_in_order(db: CheckpointStore) -> None:
    run = db.create_run(None, {}, "s.csv")
    rows = [
        {"samples": 100, "accuracy": 0.5, "layers": [{"acc": 0.4}, {"acc": 0.5}]},
        {"samples": 200, "accuracy": 0.6, "kind": "report"},
        {"samples": 200, "kind": "drift", "detail": None},
    ]
    _save(db, run, {"n": 1}, 200, history=rows[:2])
    _save(db, run, {"n": 2}, 250, history=rows[2:])
    _save(db, run, {"n": 3}, 300)
    assert _typed(db.history(run)) == _typed(rows)
    with sqlite3.connect(db.path) as conn:
        cols = conn.execute("SELECT samples, kind FROM history ORDER BY id").fetchall()
    assert cols == [(100, "report"), (200, "report"), (200, "drift")]
    with pytest.raises(CheckpointError, match=r"history\[0\]\['samples'\] must be an int"):
        _save(db, run, {}, 400, history=[{"accuracy": 1.0}])
    assert len(db.history(run)) == 3


def test_corrupt_blob_is_detected(db: CheckpointStore) -> None:
    run = db.create_run(None, {}, "s.csv")
    good = _save(db, run, {"layers.0.weight": np.ones((8, 8), np.float32)}, 1)
    bad = _save(db, run, {"layers.0.weight": np.ones((8, 8), np.float32)}, 2)
    with sqlite3.connect(db.path) as conn:
        blob = bytearray(
            conn.execute("SELECT data FROM tensors WHERE checkpoint = ?", (bad,)).fetchone()[0]
        )
        blob[17] ^= 0x01
        conn.execute("UPDATE tensors SET data = ? WHERE checkpoint = ?", (bytes(blob), bad))
    with pytest.raises(CheckpointDamagedError, match=r"'layers.0.weight' is corrupt: its sha256"):
        db.load(run, bad)
    assert np.array_equal(db.load(run, good).state["layers.0.weight"], np.ones((8, 8)))
    with sqlite3.connect(db.path) as conn:
        conn.execute("UPDATE tensors SET shape = '[8, 9]' WHERE checkpoint = ?", (good,))
    with pytest.raises(CheckpointDamagedError, match=f"checkpoint {good} .* checksum does not"):
        db.load(run, good)
    with sqlite3.connect(db.path) as conn:  # a row saved before checksums: still parsed
        conn.execute(
            "UPDATE checkpoints SET state = '{\"labels\": [1,', checksum = NULL WHERE id = ?",
            (good,),
        )
    with pytest.raises(CheckpointError, match=f"checkpoint {good} of run .* JSON does not parse"):
        db.load(run, good)


def test_wal_mode_and_pragmas(db: CheckpointStore) -> None:
    assert _count(db.path, "PRAGMA journal_mode") == "wal"
    assert db.db.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert db.db.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.db.conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    assert db.db.conn.execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE


def test_readable_with_plain_sqlite3(db: CheckpointStore) -> None:
    run = db.create_run(None, {"hidden": [3]}, "s.csv")
    w = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    cid = _save(db, run, {"layers.0.weight": w, "labels": ["a", "b"]}, 5)
    with sqlite3.connect(db.path) as conn:
        dtype, shape, data = conn.execute(
            "SELECT dtype, shape, data FROM tensors WHERE checkpoint = ? AND name = ?",
            (cid, "layers.0.weight"),
        ).fetchone()
        labels = conn.execute(
            "SELECT json_extract(state, '$.labels') FROM checkpoints WHERE id = ?", (cid,)
        ).fetchone()[0]
    assert np.array_equal(np.frombuffer(data, dtype=dtype).reshape(json.loads(shape)), w)
    assert json.loads(labels) == ["a", "b"]


def test_failed_save_writes_nothing(db: CheckpointStore) -> None:
    """A failure after the tensors went in (a trigger aborts the history insert) rolls back."""
    run = db.create_run(None, {}, "s.csv")
    _save(db, run, {"n": 1, "w": np.ones(4)}, 1)
    db.db.conn.execute(
        "CREATE TRIGGER no_boom BEFORE INSERT ON history WHEN NEW.kind = 'boom'"
        " BEGIN SELECT RAISE(ABORT, 'boom refused'); END"
    )
    with pytest.raises(CheckpointError, match="boom refused"):
        _save(db, run, {"n": 2, "w": np.zeros(4)}, 2, history=[{"samples": 2, "kind": "boom"}])
    assert [c.samples for c in db.checkpoints(run)] == [1]
    assert _count(db.path, "SELECT COUNT(*) FROM tensors") == 1
    assert db.run(run).samples == 1 and db.history(run) == []
    assert db.load(run).state["n"] == 1


def test_reader_sees_old_or_new_checkpoint_never_half(db: CheckpointStore) -> None:
    run = db.create_run(None, {}, "s.csv")
    _save(db, run, {"n": 1, "w": np.ones(1000)}, 1)
    seen: list[tuple[int, list[int]]] = []

    def mid_transaction(sql: str) -> None:
        if sql.lstrip().upper().startswith("UPDATE RUNS"):  # tensors and history are in
            with CheckpointStore(db.path, create=False) as reader:
                ck = reader.load(run)
                seen.append((ck.state["n"], [c.id for c in reader.checkpoints(run)]))
                assert np.array_equal(ck.state["w"], np.ones(1000))
                assert reader.run(run).samples == 1 and reader.history(run) == []

    db.db.conn.set_trace_callback(mid_transaction)
    try:
        new = _save(db, run, {"n": 2, "w": np.full(1000, 2.0)}, 2, history=[{"samples": 2}])
    finally:
        db.db.conn.set_trace_callback(None)
    assert seen == [(1, [1])]
    with CheckpointStore(db.path, create=False) as reader:
        assert reader.load(run).info.id == new and reader.load(run).state["n"] == 2


CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from storage import CheckpointStore

    store = CheckpointStore(sys.argv[1])
    run = store.create_run("crash", {}, "s.csv")
    state = {"n": 1, "w": np.arange(1000, dtype=np.float32)}
    store.save(run, state=state, samples=1, source="s.csv", position=1, where="one")

    def hang(sql):  # called inside the second save's transaction, after its tensors
        if sql.lstrip().upper().startswith("UPDATE RUNS"):
            print("in transaction", flush=True)
            time.sleep(60)

    store.db.conn.set_trace_callback(hang)
    big = np.ones(8_000_000, dtype=np.float32)  # 32 MB: spills into the WAL before commit
    store.save(run, state={"n": 2, "w": big}, samples=2, source="s.csv", position=2,
               where="two", history=[{"samples": 2}])
    print("committed", flush=True)
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_killed_mid_save_leaves_the_previous_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "in transaction"
        wal = path.with_name("runs.db-wal")
        # Committed so far: well under 1 MB. The rest is the 32 MB tensor, spilled uncommitted.
        assert wal.stat().st_size > 2_000_000
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    start = time.perf_counter()
    with CheckpointStore(path, create=False) as store:
        ck = store.load("crash")
        assert (ck.info.id, ck.info.where, ck.state["n"]) == (1, "one", 1)
        assert np.array_equal(ck.state["w"], np.arange(1000, dtype=np.float32))
        assert [c.id for c in store.checkpoints("crash")] == [1]
        assert store.run("crash").samples == 1 and store.history("crash") == []
        assert store.db.conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert store.db.conn.execute("PRAGMA foreign_key_check").fetchall() == []
        _save(store, "crash", {"n": 3}, 3)  # and the file takes new checkpoints
        assert store.load("crash").state == {"n": 3}
    assert time.perf_counter() - start < 5


def test_closed_store_raises_checkpoint_error(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "runs.db")
    store.close()
    store.close()  # twice is fine
    with pytest.raises(CheckpointError, match="closed"):
        store.runs()


def test_doctests() -> None:
    result = doctest.testmod(storage.store)
    assert result.attempted > 0 and result.failed == 0
