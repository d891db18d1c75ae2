"""storage.evaluation and storage.opening: scoring a saved run and opening one, from Python."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from spela_stream.config import (
    EvalOptions,
    FrameOptions,
    Input,
    LearnOptions,
    Output,
    PredictOptions,
)
from spela_stream.datasets import iter_mnist
from spela_stream.display import evaluation_text, frames_summary_lines, summary_lines
from spela_stream.errors import ConfigError
from spela_stream.features import FRAME_MODEL_DEFAULTS, frame_model_defaults
from spela_stream.model import SpelaMLP
from spela_stream.stopping import StopGuard
from storage import CheckpointStore
from storage.evaluation import evaluate, evaluation, load_saved, open_scored, write_predictions
from storage.opening import learning, made_db, open_run, resumes_frames, wants_frames
from storage.run import Run


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "r.db"
    with CheckpointStore(path) as store:
        Run.start(store, SpelaMLP(hidden=(16,), seed=0), "builtin:mnist", name="m").learn(
            iter_mnist(300)
        )
    return path


def test_evaluation_scores_without_learning(db: Path) -> None:
    info, saved, ck = load_saved(db)
    assert (info.name, ck.samples) == ("m", 300)
    first = evaluation(info.name, ck.id, "mnist", saved, iter_mnist(200), limit=150)
    again = evaluation(info.name, ck.id, "mnist", saved, iter_mnist(200), limit=150)
    assert first == again  # nothing learned between the two
    assert first["samples"] == 150
    hits = sum(row[i] for i, row in enumerate(first["confusion"]))
    assert first["accuracy"] == pytest.approx(hits / 150)
    assert [c for c, _ in first["recall"]] == first["classes"]
    text = evaluation_text(first).splitlines()
    assert text[0] == f"run m checkpoint {ck.id} on mnist: 150 samples"
    assert text[1].startswith(f"accuracy {first['accuracy']:.4f}  kappa")
    assert "confusion (rows: truth, columns: prediction)" in text


def test_open_run_refuses_model_options_on_resume_and_says_where_it_goes_on(db: Path) -> None:
    news: list[str] = []
    with CheckpointStore(db) as store:
        with pytest.raises(ConfigError, match="--lr cannot change a resumed run"):
            open_run(store, "", model={"lr": 1.0}, resume=True)
        run = open_run(store, "", model={"lr": None}, resume=True, log=news.append)
    assert run.name == "m" and run.skip == 300 and run.saved is not None
    where = run.saved.where or "start"
    assert news == [
        f"resuming run 'm' from checkpoint {run.saved.id}: 300 samples, {where} of "
        "builtin:mnist; reading builtin:mnist after its first 300 records"
    ]


def test_open_run_new_checks_resume_only_options(tmp_path: Path) -> None:
    with CheckpointStore(tmp_path / "n.db") as store:
        with pytest.raises(ConfigError, match="--skip goes with --resume"):
            open_run(store, "", model={}, skip=3)
        run = open_run(store, "", model={"hidden": (8,)}, name="n")
    assert run.source == "builtin:mnist" and run.name == "n"


def test_open_run_builds_a_new_run_from_the_frame_defaults_under_the_options(
    tmp_path: Path,
) -> None:
    """``defaults`` (the frames path's ``FRAME_MODEL_DEFAULTS``) reach the model; an option
    given overrides one; a resumed run keeps its saved setting and refuses a new one."""
    with CheckpointStore(tmp_path / "f.db") as store:
        on = open_run(store, "", model={"input_readout": None}, name="on",
                      defaults=FRAME_MODEL_DEFAULTS)  # fmt: skip
        off = open_run(store, "", model={"input_readout": 0}, name="off",
                       defaults=FRAME_MODEL_DEFAULTS)  # fmt: skip
        assert (on.loop.model.hidden, on.loop.model.input_readout) == ((1024,), 2000)
        assert (off.loop.model.hidden, off.loop.model.input_readout) == ((1024,), 0)
        on.learn(iter_mnist(20))
        again = open_run(store, "", model={"input_readout": None}, resume=True, name="on")
        assert again.loop.model.input_readout == 2000
        assert again.loop.model.input_means is not None
        with pytest.raises(ConfigError, match="--input-readout cannot change a resumed run"):
            open_run(store, "", model={"input_readout": 0}, resume=True, name="on")
    assert frame_model_defaults("none") == {"hidden": (1024,), "input_readout": 0}
    assert frame_model_defaults("efficientnet-lite0") == FRAME_MODEL_DEFAULTS


def test_made_db_removes_a_database_left_without_runs(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    with pytest.raises(RuntimeError), made_db(path):
        CheckpointStore(path).close()
        raise RuntimeError("failed before any run")
    assert not path.exists()


def test_summary_lines_for_stdout_and_stderr(tmp_path: Path) -> None:
    with CheckpointStore(tmp_path / "s.db") as store:
        run = Run.start(store, SpelaMLP(hidden=(8,), seed=0), "builtin:mnist", name="s")
        r = run.learn(iter_mnist(40))
    out, err = summary_lines(r, "builtin:mnist", "s", "s.db", None)
    assert out == f"accuracy {r.accuracy:.4f} after 40 samples of builtin:mnist"
    assert err.startswith("done: 40 samples (40 learned, 0 rejected), kappa ")
    assert err.endswith("; checkpoint of run 's' in s.db")
    out, err = summary_lines(r, "x", "s", "s.db", "SIGINT", json_out=True)
    assert out.startswith('{"kind": "summary"') and err.startswith("stopped by SIGINT: ")


# ---------------------------------------------------------------- moved out of cli/ (issue 12)


def test_open_scored_reads_records_as_wide_as_the_model(db: Path, tmp_path: Path) -> None:
    info, saved, _ = load_saved(db)
    data = tmp_path / "x.csv"
    data.write_text(",".join(["0"] * 784) + "\n" + ",".join(["1"] * 784) + "\n")
    with open_scored(str(data), info, saved.model) as src:
        samples = list(src)
    assert [s.y for s in samples] == [None, None] and samples[1].x.shape == (784,)
    with pytest.raises(ConfigError, match="run 'm' learned from builtin:mnist, not from frames"):
        open_scored("images:nowhere", info, saved.model)
    framed = replace(info, config={**info.config, "frames": {"backbone": "none", "size": 28}})
    with pytest.raises(ConfigError, match="run 'm' learned frames through a backbone; score it"):
        open_scored(str(data), framed, saved.model)


def test_resumes_frames_reads_the_run_a_resume_goes_on(db: Path, tmp_path: Path) -> None:
    assert not resumes_frames(tmp_path / "none.db")
    assert not resumes_frames(db) and not resumes_frames(db, "m")
    with CheckpointStore(db) as store:
        store.create_run("cam", {**store.run("m").config, "frames": {"backbone": "none"}}, "c:0")
    assert resumes_frames(db) and resumes_frames(db, "cam") and not resumes_frames(db, "m")


def test_evaluate_and_write_predictions_use_the_saved_run(db: Path, tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_text("".join(",".join([str(k)] * 784) + f",{k}\n" for k in (0, 1, 0)))
    result = evaluate(EvalOptions(Input(str(data)), db, None, None, None, 1000, False, 1))
    info, saved, ck = load_saved(db)
    with open_scored(str(data), info, saved.model) as src:
        assert result == evaluation("m", ck.id, str(data), saved, src)
    assert result["samples"] == 3
    out = io.StringIO()
    write_predictions(PredictOptions(Input(str(data)), db, "m", None, Output.csv, 1), out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "label,confidence,layer" and len(lines) == 4
    out = io.StringIO()
    write_predictions(PredictOptions(Input(str(data)), db, "m", None, Output.json, 1), out)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(rows) == 3 and [str(r["label"]) for r in rows] == [
        ln.split(",")[0] for ln in lines[1:]
    ]


def test_learning_opens_the_run_asked_and_a_failed_first_one_leaves_no_file(
    tmp_path: Path,
) -> None:
    db, heard = tmp_path / "new.db", []
    opts = LearnOptions(Input(""), db, "a", False, {"hidden": (8,), "seed": 0, "lr": None})
    with learning(opts, heard.append, default_source="builtin:mnist") as (run, guard):
        assert (run.name, run.source, isinstance(guard, StopGuard)) == ("a", "builtin:mnist", True)
        assert run.loop.model.hidden == (8,)
        run.learn(iter_mnist(20))
    again = LearnOptions(Input(""), db, None, True, {})
    with learning(again, heard.append, default_source="builtin:mnist") as (run, _):
        assert (run.name, run.loop.samples) == ("a", 20)
    bad = LearnOptions(Input(""), tmp_path / "bad.db", None, False, {}, checkpoint=3)
    with pytest.raises(ConfigError, match=r"^--checkpoint goes with --resume"):
        with learning(bad, heard.append, default_source="builtin:mnist"):
            pass
    assert not (tmp_path / "bad.db").exists()


def test_wants_frames_by_source_frame_option_or_resumed_camera_run(db: Path) -> None:
    def asked(source: str, frames: FrameOptions | None = None, **kw: Any) -> LearnOptions:
        return LearnOptions(Input(source, frames=frames), db, kw.pop("run", None),
                            kw.pop("resume", False), {})  # fmt: skip

    assert wants_frames(asked("camera:0")) and wants_frames(asked("images:some/dir"))
    assert not wants_frames(asked("data.csv")) and not wants_frames(asked("", FrameOptions()))
    assert wants_frames(asked("data.csv", FrameOptions(fps=2.0)))  # a frame option says frames
    assert wants_frames(asked("", FrameOptions(changes=True)))
    assert not wants_frames(asked("", resume=True))  # the latest run, "m", learned a file
    with CheckpointStore(db) as store:
        store.create_run("cam", {**store.run("m").config, "frames": {"backbone": "none"}}, "c:0")
    assert wants_frames(asked("", resume=True)) and wants_frames(asked("", run="cam", resume=True))
    assert not wants_frames(asked("", run="m", resume=True))
    assert not wants_frames(asked("data.csv", run="cam", resume=True))  # its source is given
    assert not wants_frames(asked("", run="cam"))  # a new run named cam: no resume


def test_frames_summary_lines_keep_stdout_to_one_format(tmp_path: Path) -> None:
    with CheckpointStore(tmp_path / "s.db") as store:
        r = Run.start(store, SpelaMLP(hidden=(8,), seed=0), "x", name="s").learn(iter_mnist(40))
    counts = {"frames_read": 45, "dropped": 2, "skipped": 3}
    out, err = frames_summary_lines(r, (0, 0), counts, [0, 1], "camera:0", "s", "s.db", None)
    assert out == f"accuracy {r.accuracy:.4f} after 40 samples of camera:0"
    assert err == (f"done: 40 frames (40 learned, 0 predicted), accuracy {r.accuracy:.4f}, 2 "
                   "dropped (the learner fell behind), 3 passed over by --fps; classes [0, 1]; "
                   "checkpoint of run 's' in s.db")  # fmt: skip
    assert frames_summary_lines(r, (0, 40), counts, [], "c", "s", "s.db", None)[0] is None
    out, err = frames_summary_lines(r, (0, 0), counts, [], "c", "s", "d", "SIGINT", json_out=True)
    assert out is not None and json.loads(out)["kind"] == "summary"
    assert {k: json.loads(out)[k] for k in counts} == counts and err.startswith("stopped by SIGINT")
