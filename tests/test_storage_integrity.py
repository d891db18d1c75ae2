"""Checkpoints that detect every change: checksums, fallback, verify, older files, resuming."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spela_stream.errors import CheckpointDamagedError, CheckpointError
from spela_stream.model import SpelaMLP
from spela_stream.prequential import Prequential
from storage import CheckpointStore
from storage.session import Session, load_loop


def _learned() -> tuple[dict[str, Any], dict[str, Any]]:
    """A real model's state (labels [0, 1]) and its loop's state, whose summary says 0.75."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(20, 3)), [0, 1] * 10
    loop = Prequential(SpelaMLP(hidden=(4,), seed=0, memory=0))
    list(loop.run(zip(X, y, strict=True), every=20))
    metrics = loop.state()
    metrics["summary"] = {**metrics.get("summary", {}), "accuracy": 0.75}
    return loop.model.state_dict(), metrics


STATE, METRICS = _learned()


def _save(store: CheckpointStore, run: str, n: int) -> int:
    return store.save(
        run, state=STATE, samples=n, source="s.csv", position=n, where=f"line {n + 1}",
        metrics=METRICS,
    )  # fmt: skip


def _sql(path: Path, sql: str, *params: Any) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(sql, params)


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, list[int]]:
    """A database with run 'w' holding three checkpoints, after 1000, 2000 and 3000 samples."""
    path = tmp_path / "runs.db"
    with CheckpointStore(path) as store:
        store.create_run("w", {}, "s.csv")
        ids = [_save(store, "w", n) for n in (1000, 2000, 3000)]
    return path, ids


# One byte (or one value) changed in each thing a checkpoint holds; the two cases first.
CHANGES = [
    ("state", "replace(state, '[0,1]', '[0,7]')"),
    ("position", "9000"),
    ("samples", "samples + 1"),
    ("metrics", "replace(metrics, '0.75', '0.95')"),
    ('"where"', "'line 1'"),
    ("source", "'t.csv'"),
    ("created", "replace(created, '20', '19')"),
    ("bytes", "bytes + 1"),
]


@pytest.mark.parametrize(("column", "value"), CHANGES, ids=[c for c, _ in CHANGES])
def test_a_changed_checkpoint_column_is_damage(
    saved: tuple[Path, list[int]], column: str, value: str
) -> None:
    path, ids = saved
    _sql(path, f"UPDATE checkpoints SET {column} = {value} WHERE id = ?", ids[1])
    with CheckpointStore(path) as store:
        with pytest.raises(CheckpointDamagedError) as caught:
            store.load("w", ids[1])
        assert store.load("w", ids[0]).state["labels"] == [0, 1]
    message = str(caught.value)
    assert f"checkpoint {ids[1]} of run 'w' in {path} is damaged" in message
    assert "checksum does not match" in message


ONE_TENSOR = "rowid = (SELECT min(rowid) FROM tensors WHERE checkpoint = ?)"


@pytest.mark.parametrize(
    "change",
    [
        f"UPDATE tensors SET shape = '[3,2]' WHERE {ONE_TENSOR}",
        f"UPDATE tensors SET dtype = '<i4' WHERE {ONE_TENSOR}",
        f"UPDATE tensors SET name = 'v' WHERE {ONE_TENSOR}",
        "DELETE FROM tensors WHERE checkpoint = ?",
        "INSERT INTO tensors SELECT ?, 'extra', dtype, shape, data, checksum FROM tensors LIMIT 1",
    ],
)
def test_a_changed_tensor_row_is_damage(saved: tuple[Path, list[int]], change: str) -> None:
    path, ids = saved
    _sql(path, change, ids[2])
    with CheckpointStore(path) as store, pytest.raises(CheckpointDamagedError, match="checksum"):
        store.load("w", ids[2])


def test_load_falls_back_to_the_newest_intact_checkpoint(saved: tuple[Path, list[int]]) -> None:
    path, ids = saved
    _sql(path, "UPDATE checkpoints SET position = 9000 WHERE id = ?", ids[2])
    with CheckpointStore(path) as store:
        ck = store.load("w")
        assert ck.info.id == ids[1] and ck.info.position == 2000
        assert len(ck.damaged) == 1 and f"checkpoint {ids[2]} of run 'w'" in ck.damaged[0]
        assert store.load("w", ids[1]).damaged == []
        with pytest.raises(CheckpointDamagedError, match=f"checkpoint {ids[2]} "):
            store.load("w", ids[2])  # asked for by id: no fallback
        _sql(path, "UPDATE checkpoints SET samples = 0")
        with pytest.raises(CheckpointDamagedError, match="every checkpoint of run 'w'.* 2 older"):
            store.load("w")


def test_a_changed_run_config_is_damage(saved: tuple[Path, list[int]]) -> None:
    # A run's config (its model options, a camera run's backbone) is read on every resume of a
    # run without checkpoints and by eval/predict of frames: one changed byte must not pass.
    path, ids = saved
    with CheckpointStore(path) as store:
        store.create_run("v", {"hidden": [8]}, "s.csv")
    _sql(path, "UPDATE runs SET config = replace(config, '8', '9') WHERE name = 'v'")
    with CheckpointStore(path) as store:
        assert store.run("w").config == {}  # the other run is sound
        for read in (lambda: store.run("v"), store.runs, store.latest_run):
            with pytest.raises(CheckpointDamagedError) as caught:
                read()
            message = str(caught.value)
            assert f"run 'v' in {path} is damaged: its config" in message
            assert f"spela-stream checkpoints verify --db {path}" in message
        report = store.verify()
        assert not report.sound and (report.checkpoints, report.intact) == (3, 3)
        assert len(report.damaged) == 1 and report.damaged[0].startswith("run 'v' in ")


def test_verify_reports_sound_and_damaged(saved: tuple[Path, list[int]]) -> None:
    path, ids = saved
    with CheckpointStore(path) as store:
        report = store.verify()
        assert report.sound and report.integrity == [] and report.damaged == []
        assert (report.checkpoints, report.intact, report.unchecked) == (3, 3, [])
    _sql(path, "UPDATE checkpoints SET state = replace(state, '[0,1]', '[0,7]') WHERE id = ?",
         ids[0])  # fmt: skip
    with CheckpointStore(path) as store:
        report = store.verify()
        assert not report.sound and (report.checkpoints, report.intact) == (3, 2)
        assert len(report.damaged) == 1 and f"checkpoint {ids[0]} of run 'w'" in report.damaged[0]
        with pytest.raises(CheckpointError, match="no run 'x'"):
            store.verify("x")


def test_duplicate_labels_and_empty_metrics_refuse_to_resume(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    with CheckpointStore(tmp_path / "runs.db") as store:
        loop = Prequential(SpelaMLP(hidden=(8,), seed=0))
        list(loop.run(zip(X, y.tolist(), strict=True), every=20))
        session = Session(store, store.create_run("w", {}, "s.csv"), loop, "s.csv")
        cid = session.save()
        resumed, info = load_loop(store, store.run("w"))
        assert info.id == cid and resumed.samples == 40
        ck = store.load("w")
        state = {**ck.state, "labels": [0, 0]}
        store.save("w", state=state, samples=40, source="s.csv", position=40, where="@40",
                   metrics=ck.metrics)  # fmt: skip
        with pytest.raises(CheckpointError, match=r"cannot be resumed.*labels \[0, 0\] hold one"):
            load_loop(store, store.run("w"))
        store.save("w", state=ck.state, samples=40, source="s.csv", position=40, where="@40",
                   metrics={})  # fmt: skip
        with pytest.raises(CheckpointError, match=r"cannot be resumed: its state is incomplete"):
            load_loop(store, store.run("w"), learn=False)


def test_verify_rebuilds_every_checkpoint_and_reports_unusable_ones(tmp_path: Path) -> None:
    # Checksums that hold over a state this code cannot rebuild (a duplicate label list saved
    # with its checksum recomputed): verify called it sound while --resume passed it over.
    from typer.testing import CliRunner

    from cli.app import app

    path = tmp_path / "runs.db"
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    with CheckpointStore(path) as store:
        loop = Prequential(SpelaMLP(hidden=(8,), seed=0))
        list(loop.run(zip(X, y.tolist(), strict=True), every=20))
        good = Session(store, store.create_run("w", {}, "s.csv"), loop, "s.csv").save()
        ck = store.load("w")
        bad = store.save("w", state={**ck.state, "labels": [0, 0]}, samples=40, source="s.csv",
                         position=40, where="@40", metrics=ck.metrics)  # fmt: skip
        report = store.verify()
    assert (
        not report.sound and report.damaged == [] and (report.checkpoints, report.intact) == (2, 1)
    )
    assert len(report.unusable) == 1
    assert re.match(rf"checkpoint {bad} of run 'w' in {re.escape(str(path))} cannot be resumed",
                    report.unusable[0]), report.unusable  # fmt: skip
    result = CliRunner().invoke(app, ["checkpoints", "verify", "--db", str(path)])
    assert result.exit_code == 1, result.output
    assert f"unusable: checkpoint {bad} of run 'w'" in result.output
    assert f"checkpoint {good} " not in result.output
    assert result.output.endswith(f"{path}: DAMAGED; 1 of 2 checkpoints intact\n")


def _downgrade(path: Path) -> None:
    """Make the file what a spela-stream before checksums and leases wrote."""
    _sql(path, "ALTER TABLE checkpoints DROP COLUMN checksum")
    _sql(path, "ALTER TABLE runs DROP COLUMN checksum")
    _sql(path, "DROP TABLE leases")


def test_an_older_database_is_migrated_on_open(saved: tuple[Path, list[int]]) -> None:
    path, ids = saved
    _downgrade(path)
    with CheckpointStore(path, create=False, readonly=True) as store:  # migrates nothing
        assert store.load("w").info.id == ids[2] and store.run("w").config == {}
        assert store.verify().unchecked == ids
    with sqlite3.connect(path) as conn:
        assert "checksum" not in {r[1] for r in conn.execute("PRAGMA table_info(checkpoints)")}
    with CheckpointStore(path, create=False) as store:
        new = _save(store, "w", 4000)
        report = store.verify()
        assert report.sound and report.unchecked == ids and report.intact == 4
        with store.writer("w"):
            pass
    _sql(path, "UPDATE checkpoints SET position = 1 WHERE id = ?", new)
    _sql(path, "UPDATE runs SET config = '{\"hidden\":[4]}'")  # created unchecked: read so
    with CheckpointStore(path, create=False) as store:
        assert store.load("w").info.id == ids[2]  # the old, unchecked one: nothing to check it by
        assert store.run("w").config == {"hidden": [4]}


def test_checkpoints_verify_command(saved: tuple[Path, list[int]]) -> None:
    from typer.testing import CliRunner

    from cli.app import app

    path, ids = saved
    runner = CliRunner()
    result = runner.invoke(app, ["checkpoints", "verify", "--db", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.endswith(f"{path}: sound; 3 of 3 checkpoints intact\n")
    _sql(path, "UPDATE checkpoints SET position = 9000 WHERE id = ?", ids[2])
    result = runner.invoke(app, ["checkpoints", "verify", "--db", str(path), "--run", "w"])
    assert result.exit_code == 1, result.output
    assert f"damaged: checkpoint {ids[2]} of run 'w'" in result.output
    assert "DAMAGED; 2 of 3 checkpoints intact" in result.output
    listed = runner.invoke(app, ["checkpoints", "--db", str(path)])
    assert listed.exit_code == 0 and listed.output.count("line ") == 3


def test_a_database_on_a_read_only_mount_is_listed_and_loaded(
    saved: tuple[Path, list[int]], tmp_path: Path
) -> None:
    """A real read-only bind mount (root ignores file modes); skipped where mounting is refused."""
    import subprocess

    path, ids = saved
    mount = tmp_path / "ro"
    mount.mkdir()
    try:
        subprocess.run(["mount", "--bind", str(path.parent), str(mount)], check=True,
                       capture_output=True)  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("cannot bind-mount here")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mount)], check=True)
        with CheckpointStore(mount / "runs.db", create=False) as store:  # read-only by itself
            assert store.readonly and [c.id for c in store.checkpoints("w")] == ids
            assert store.load("w").info.id == ids[2] and store.verify().sound
            with pytest.raises(CheckpointError, match="open read-only"):
                _save(store, "w", 4000)
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_truncated_database_is_called_damaged(saved: tuple[Path, list[int]]) -> None:
    path, _ = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError) as caught:
        with CheckpointStore(path, create=False) as store:
            store.load("w")
    assert "is damaged" in str(caught.value) and "use another --db" not in str(caught.value)
