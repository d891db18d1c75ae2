"""storage.listing and spela_stream.plot, used from Python: what ``runs``, ``checkpoints``,
``checkpoints verify`` and ``plot`` print, without the command line (issue 12)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spela_stream.datasets import iter_mnist
from spela_stream.errors import CheckpointError, ConfigError
from spela_stream.model import SpelaMLP
from spela_stream.plot import CurveView, learning_curve
from storage import CheckpointStore
from storage.listing import (
    CHECKPOINT_HEADER,
    RUN_HEADER,
    checkpoints_listing,
    plot_run,
    runs_listing,
    verify_lines,
)
from storage.records import VerifyReport
from storage.run import Run
from storage.store import verify_file

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("listing") / "runs.db"
    with CheckpointStore(path) as store:
        run = Run.start(store, SpelaMLP(hidden=(16,), seed=0), "builtin:mnist", name="a")
        run.learn(iter_mnist(120), every=40)
        store.create_run("empty", SpelaMLP(hidden=(8,), seed=0).config(), "x.csv")
    return path


def test_runs_listing_is_a_table_or_a_json_line_per_run(db: Path) -> None:
    (text,) = runs_listing(db)
    lines = text.splitlines()
    assert lines[0].split() == RUN_HEADER
    rows = {line.split()[0]: line.split() for line in lines[1:] if line.strip("- ")}
    assert set(rows) == {"a", "empty"}
    assert rows["a"][1] == "120" and "16" in rows["a"] and "builtin:mnist" in rows["a"]
    found = [json.loads(line) for line in runs_listing(db, json_out=True)]
    assert sorted(r["name"] for r in found) == ["a", "empty"]
    a = next(r for r in found if r["name"] == "a")
    assert a["samples"] == 120 and a["checkpoints"] == 1 and a["config"]["hidden"] == [16]


def test_checkpoints_listing_of_one_run_or_all(db: Path) -> None:
    (text,) = checkpoints_listing(db)
    header, *rows = text.splitlines()
    assert header.split() == CHECKPOINT_HEADER
    body = [r for r in rows if r.strip("- ")]
    assert len(body) == 1 and body[0].split()[1:3] == ["a", "120"]
    (one,) = checkpoints_listing(db, "a", json_out=True)
    assert json.loads(one)["run"] == "a" and json.loads(one)["samples"] == 120
    assert checkpoints_listing(db, "empty", json_out=True) == []
    with pytest.raises(CheckpointError, match="nope"):
        checkpoints_listing(db, "nope")


def test_verify_lines_end_with_the_verdict(db: Path) -> None:
    assert verify_lines(verify_file(db)) == [f"{db}: sound; 1 of 1 checkpoint intact"]
    bad = VerifyReport(str(db), [], 2, 1, [3], ["run 'a' checkpoint 1: tensor w"],
                       unusable=["run 'a' checkpoint 2: no model"])  # fmt: skip
    assert verify_lines(bad) == [
        "damaged: run 'a' checkpoint 1: tensor w",
        "unusable: run 'a' checkpoint 2: no model",
        "unchecked: checkpoints [3] were saved before checksums",
        f"{db}: DAMAGED; 1 of 2 checkpoints intact",
    ]
    gone = VerifyReport("x.db", ["file is not a database"], 0, 0, [], [], readable=False)
    assert verify_lines(gone) == ["damaged: file is not a database",
                                  "x.db: DAMAGED; SQLite cannot read it"]  # fmt: skip


def test_plot_run_draws_the_latest_run_and_says_which(db: Path, tmp_path: Path) -> None:
    notes: list[str] = []
    with pytest.raises(CheckpointError, match="run 'empty' has no metric history yet"):
        plot_run(db, None, tmp_path / "c.png", log=notes.append)  # the latest: made last
    assert notes == ["plotting run 'empty', the latest (--run to choose)"]
    assert not (tmp_path / "c.png").exists()
    notes.clear()
    assert plot_run(db, "a", tmp_path / "a.png", CurveView(axis="linear"), notes.append).name == "a"
    assert notes == [] and (tmp_path / "a.png").read_bytes()[:8] == PNG


def test_learning_curve_refuses_what_it_cannot_draw(db: Path, tmp_path: Path) -> None:
    with CheckpointStore(db, create=False, readonly=True) as store:
        info, history = store.run("a"), store.history("a")
        empty = store.run("empty")
    assert [h["samples"] for h in history if h["kind"] == "report"] == [40, 80, 120]
    learning_curve(history, info, tmp_path / "w.png", CurveView(start=40, end=80, classes=0))
    assert (tmp_path / "w.png").read_bytes()[:8] == PNG
    with pytest.raises(ConfigError, match="no rows of run 'a' between samples 500 and the end"):
        learning_curve(history, info, tmp_path / "x.png", CurveView(start=500))
    with pytest.raises(ConfigError, match="layer 3: run 'a' has layers 0 to 0"):
        learning_curve(history, info, tmp_path / "x.png", CurveView(layers=(3,)))
    with pytest.raises(CheckpointError, match="run 'empty' has no metric history yet"):
        learning_curve([], empty, tmp_path / "x.png")
    with pytest.raises(ConfigError, match="cannot write the plot"):
        learning_curve(history, info, tmp_path / "no" / "such" / "x.png")
    assert not (tmp_path / "x.png").exists()
