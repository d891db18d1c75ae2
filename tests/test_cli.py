"""The typer app: help everywhere, stdout for the product, stderr for progress, exit codes,
checkpoints in real SQLite files, input from real files and stdin."""

from __future__ import annotations

import json
import math
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import typer.main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from cli.app import app
from spela_stream.datasets import load_mnist
from storage import CheckpointStore

runner = CliRunner()
COMMANDS = sorted(typer.main.get_command(app).commands)
ROW = re.compile(r"^\s+\d+\s+\d\.\d{4}\s+\d\.\d{4}\s")  # a progress row: samples cum.acc roll.acc


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own folder, so the default runs.db lands there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SPELA_DB", raising=False)


def mnist_csv(path: Path, n: int, start: int = 0, header: bool = True) -> Path:
    """The first MNIST digits as a CSV file: 784 pixel columns, then the label."""
    X, y = load_mnist(start + n)
    with path.open("w") as fh:
        if header:
            fh.write(",".join([f"p{i}" for i in range(784)] + ["label"]) + "\n")
        for row, label in zip(X[start:], y[start:], strict=True):
            fh.write(",".join(str(int(v)) for v in row) + f",{label}\n")
    return path


def blobs_csv(path: Path, n: int = 200, seed: int = 0, labels: bool = True) -> Path:
    """Four separable 5-feature classes named a..d, with a header."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(4, 5))
    k = rng.integers(0, 4, n)
    X = centres[k] + rng.normal(size=(n, 5))
    with path.open("w") as fh:
        fh.write("f0,f1,f2,f3,f4" + (",kind\n" if labels else "\n"))
        for row, c in zip(X, k, strict=True):
            fh.write(",".join(f"{v:.4f}" for v in row) + (f",{'abcd'[c]}\n" if labels else "\n"))
    return path


def ok(args: list[str], input: str | None = None) -> Result:
    """Run the app and insist on exit 0, showing both streams when it is not."""
    result = runner.invoke(app, args, input=input)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result


# ---------------------------------------------------------------- help and options


def test_app_help() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    assert "SPELA" in result.stdout
    for name in COMMANDS:
        assert name in result.stdout


def test_all_commands_exist() -> None:
    assert COMMANDS == ["checkpoints", "eval", "fleet", "learn", "plot", "predict", "runs", "send"]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help(name: str) -> None:
    result = runner.invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.stdout and "--help" in result.stdout


def test_learn_has_the_documented_options() -> None:
    out = runner.invoke(app, ["learn", "--help"], env={"COLUMNS": "200"}).stdout
    for option in (
        "--source", "--db", "--run", "--hidden", "--lr", "--every", "--checkpoint-every",
        "--checkpoint-seconds", "--resume", "--json", "--window", "--keep", "--on-error",
        "--rejects", "--label-column", "--format", "--limit",
    ):  # fmt: skip
        assert option in out, option
    # Help text in [brackets] is eaten as rich markup; the defaults must show.
    for text in ("Layer widths, or auto (default: auto = 512,512 up to 64 input features, else "
                 "1024,1024; camera and images: 1024)",
                 "Local step size (default: 10)", "(default: last)"):  # fmt: skip
        assert text in out, text


@pytest.mark.parametrize("hidden", ["a,b", "", "8,-1", "0", "1.5", "16,,8"])
def test_bad_hidden_exits_2(hidden: str) -> None:
    result = runner.invoke(app, ["learn", "--hidden", hidden, "--limit", "5"])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert "--hidden" in result.stderr or "Invalid value" in result.stderr
    assert not Path("runs.db").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--report", "x"], "report"), (["--lr", "0"], "lr"), (["--lr", "-1"], "lr"),
     (["--every", "0"], "every"), (["--keep", "-1"], "keep"), (["--on-error", "x"], "on-error"),
     (["--format", "xls"], "format"),
     (["--rejects", "r.txt"], "Invalid value: --rejects needs --on-error skip")],
)  # fmt: skip
def test_bad_option_values_exit_2(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["learn", "--hidden", "8", "--limit", "5", *args])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert message in result.stderr
    assert isinstance(result.exception, SystemExit)  # handled, not a traceback


# ---------------------------------------------------------------- learn on the embedded stream


def test_learn_stdout_is_the_result_and_progress_goes_to_stderr() -> None:
    result = ok(["learn", "--limit", "300", "--every", "100", "--hidden", "32"])
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    match = re.fullmatch(r"accuracy (\d\.\d{4}) after 300 samples of builtin:mnist", lines[0])
    assert match is not None, lines
    # 32 hidden units, 300 digits, default lr: measured 0.535; chance is 0.10.
    assert 0.4 < float(match.group(1)) <= 1.0
    err = result.stderr.splitlines()
    header = next(i for i, line in enumerate(err) if "cum.acc" in line)
    rows = [int(line.split()[0]) for line in err[header + 1 :] if ROW.match(line)]
    assert rows == [1, 2, 4, 8, 16, 32, 64, 100, 128, 200, 256, 300]  # doublings and every 100
    assert "accuracy " not in result.stderr


def test_learn_json_rows_then_a_summary() -> None:
    result = ok(["learn", "--limit", "250", "--every", "100", "--hidden", "16,8", "--json"])
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["kind"] for r in rows[-4:]] == ["report", "report", "report", "summary"]
    reports = [r for r in rows if r["kind"] == "report"]
    assert [r["samples"] for r in reports if r["samples"] % 100 == 0 or r["samples"] == 250] == [
        100, 200, 250,
    ]  # fmt: skip
    for r in rows:
        assert 0.0 <= r["accuracy"] <= 1.0 and -1.0 <= r["kappa"] <= 1.0
        assert len(r["layer_accuracy"]) == 2 and len(r["layer_rolling"]) == 2
    assert rows[-1]["samples"] == 250 and rows[-1]["learned"] == 250
    assert not any(ROW.match(line) for line in result.stderr.splitlines())


def test_learn_checkpoints_into_the_db_and_runs_lists_it() -> None:
    ok(["learn", "--limit", "300", "--hidden", "16", "--checkpoint-every", "100", "--keep", "2"])
    with CheckpointStore("runs.db", create=False) as store:
        (info,) = store.runs()
        assert (info.name, info.samples, info.source) == ("run-1", 300, "builtin:mnist")
        assert [c.samples for c in store.checkpoints("run-1")] == [200, 300]  # keep 2
        assert info.summary is not None and 0.3 < info.summary["accuracy"] <= 1.0
    table = ok(["runs"]).stdout
    assert "run-1" in table and "300" in table and "builtin:mnist" in table
    (row,) = [json.loads(x) for x in ok(["runs", "--json"]).stdout.splitlines()]
    assert row["name"] == "run-1" and row["config"]["hidden"] == [16]
    cks = [json.loads(x) for x in ok(["checkpoints", "--json"]).stdout.splitlines()]
    assert [c["samples"] for c in cks] == [200, 300]
    assert cks[-1]["position"] == 300 and cks[-1]["where"] == "builtin:mnist record 299"
    assert "builtin:mnist record 299" in ok(["checkpoints", "--run", "run-1"]).stdout


def test_second_learn_makes_a_second_run_and_a_taken_name_is_an_error() -> None:
    ok(["learn", "--limit", "20", "--hidden", "8", "--run", "a"])
    ok(["learn", "--limit", "20", "--hidden", "8"])
    result = runner.invoke(app, ["learn", "--limit", "20", "--hidden", "8", "--run", "a"])
    assert result.exit_code == 1
    assert "Error: run 'a' already exists" in result.stderr and "--resume" in result.stderr
    with CheckpointStore("runs.db", create=False) as store:
        assert sorted(r.name for r in store.runs()) == ["a", "run-1"]


def test_resume_continues_to_the_limit_and_equals_one_unbroken_run() -> None:
    common = ["--hidden", "16", "--checkpoint-every", "1000"]
    ok(["learn", "--db", "whole.db", "--limit", "400", *common])
    ok(["learn", "--db", "parts.db", "--limit", "150", *common])
    result = ok(["learn", "--db", "parts.db", "--resume", "--limit", "400"])
    assert "resuming run 'run-1'" in result.stderr
    assert result.stdout.startswith("accuracy")
    with CheckpointStore("whole.db") as a, CheckpointStore("parts.db") as b:
        wa, wb = a.load("run-1"), b.load("run-1")
    assert wa.info.samples == wb.info.samples == 400
    for key, value in wa.state.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(value, wb.state[key], err_msg=key)
    assert wa.metrics and wb.metrics
    assert wa.metrics["summary"]["accuracy"] == wb.metrics["summary"]["accuracy"]


def test_resume_needs_an_existing_database_and_leaves_no_file() -> None:
    result = runner.invoke(app, ["learn", "--resume", "--db", "nothing.db"])
    assert result.exit_code == 1 and "nothing.db: no such database" in result.stderr
    assert not Path("nothing.db").exists()


def test_resume_on_another_file_says_so(tmp_path: Path) -> None:
    first = blobs_csv(tmp_path / "first.csv", n=30)
    ok(["learn", "-s", str(first), "--hidden", "8"])
    second = blobs_csv(tmp_path / "second.csv", n=50, seed=1)
    result = ok(["learn", "--resume", "-s", str(second)])
    # Issue 12, defect 1: another file is new data, learned from its beginning, with a note.
    assert f"note: {second} is not the file the run read 30 records of" in result.stderr
    assert "after 80 samples" in result.stdout  # 30 + all 50 records of the new file
    moved = tmp_path / "moved.csv"
    moved.write_bytes(second.read_bytes())
    result = ok(["learn", "--resume", "-s", str(moved)])
    assert f"was reading {second}; now {moved}, from record 51 on" in result.stderr
    assert "after 80 samples" in result.stdout  # the same bytes: nothing learned twice


def test_resume_on_stdin_learns_the_new_rows(tmp_path: Path) -> None:
    # Issue 12, defect 1: head -3000 on stdin, then rows 3001-5000 with --resume.
    lines = blobs_csv(tmp_path / "b.csv", n=5000).read_text().splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    ok(["learn", "-s", "-", "--hidden", "8"], input=header + "".join(rows[:3000]))
    result = ok(["learn", "--resume", "-s", "-"], input=header + "".join(rows[3000:]))
    assert "after 5000 samples" in result.stdout and "carries new data" in result.stderr
    result = ok(["learn", "--resume", "-s", "-", "--skip", "1500"],
                input=header + "".join(rows[3000:]))  # fmt: skip
    assert "after 5500 samples" in result.stdout  # rows 4501..5000 only


def test_predict_writes_no_header_before_an_error(trained: Path, tmp_path: Path) -> None:
    wide = tmp_path / "wide.csv"
    wide.write_text("1,2,3\n")
    result = runner.invoke(app, ["predict", "-s", str(wide)])
    assert result.exit_code == 1 and result.stdout == ""
    assert f"Error: {wide} line 1: sample has 2 features, the model was built for 784" in (
        result.stderr
    )


def test_resume_refuses_to_change_the_model() -> None:
    ok(["learn", "--limit", "20", "--hidden", "8"])
    result = runner.invoke(app, ["learn", "--resume", "--hidden", "16"])
    assert result.exit_code == 2 and "cannot change a resumed run" in result.stderr


# ---------------------------------------------------------------- files, stdin, bad input


def test_learn_from_a_csv_file_with_string_labels(tmp_path: Path) -> None:
    data = blobs_csv(tmp_path / "blobs.csv", n=300)
    result = ok(["learn", "--source", str(data), "--hidden", "32", "--every", "100"])
    acc = float(result.stdout.split()[1])
    # Four well separated blobs: measured 0.876 after 300 samples (chance 0.25).
    assert acc > 0.85
    with CheckpointStore("runs.db") as store:
        ck = store.load("run-1")
    assert sorted(ck.state["labels"]) == ["a", "b", "c", "d"]
    assert ck.info.position == 300 and ck.info.where == f"{data} line 301"


def test_learn_from_stdin_input(tmp_path: Path) -> None:
    text = blobs_csv(tmp_path / "b.csv", n=120).read_text()
    result = ok(["learn", "--source", "-", "--hidden", "16"], input=text)
    assert result.stdout.startswith("accuracy") and "after 120 samples of -" in result.stdout


def test_format_option_overrides_the_name(tmp_path: Path) -> None:
    data = blobs_csv(tmp_path / "blobs.txt", n=50)
    out = ok(["learn", "-s", str(data), "--format", "csv", "--hidden", "8"]).stdout
    assert "after 50 samples" in out


def test_label_column_by_name_and_index(tmp_path: Path) -> None:
    path = tmp_path / "first.csv"
    lines = blobs_csv(tmp_path / "b.csv", n=60).read_text().splitlines()
    with path.open("w") as fh:  # move the label to the front
        for line in lines:
            *xs, lab = line.split(",")
            fh.write(",".join([lab, *xs]) + "\n")
    for column in ("kind", "0"):
        out = ok(["learn", "-s", str(path), "--label-column", column, "--hidden", "8",
                  "--db", f"{column}.db"])  # fmt: skip
        assert "after 60 samples" in out.stdout


def test_a_bad_line_stops_with_its_place_after_a_checkpoint(tmp_path: Path) -> None:
    lines = blobs_csv(tmp_path / "b.csv", n=50).read_text().splitlines()
    lines[31] = "1.0,2.0,oops,4.0,5.0,a"  # line 32 of the file (the header is line 1)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["learn", "-s", str(bad), "--hidden", "8"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert re.search(rf"^Error: {re.escape(str(bad))} line 32: .*oops", result.stderr, re.M)
    with CheckpointStore("runs.db") as store:
        ck = store.load("run-1")
    assert (ck.info.samples, ck.info.position) == (30, 30)  # all 30 good records before it
    # Fix the line and resume: the run goes on from line 32.
    lines[31] = "1.0,2.0,3.0,4.0,5.0,a"
    bad.write_text("\n".join(lines) + "\n")
    ok(["learn", "--resume", "-s", str(bad)])
    with CheckpointStore("runs.db") as store:
        assert store.load("run-1").info.samples == 50


def test_a_label_of_another_kind_stops_with_its_line_after_a_checkpoint(tmp_path: Path) -> None:
    """README: the first label fixes the kind; int labels, then 'yes', is an error at its line."""
    rng = np.random.default_rng(0)
    path = tmp_path / "mixed.csv"
    xs = rng.normal(size=(20, 2))
    rows = [f"{a:.3f},{b:.3f},{k}" for (a, b), k in zip(xs, [1, 2] * 10, strict=True)]
    rows[12] = "0.5,0.5,yes"  # line 13 (no header)
    path.write_text("\n".join(rows) + "\n")
    result = runner.invoke(app, ["learn", "-s", str(path), "--hidden", "8", "--no-header"])
    assert result.exit_code == 1, (result.stdout, result.stderr, result.exception)
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert re.search(
        rf"^Error: {re.escape(str(path))} line 13: label 'yes' is a str, but this model's labels"
        r" are int \(the first was 1\)",
        result.stderr,
        re.M,
    ), result.stderr
    with CheckpointStore("runs.db") as store:
        ck = store.load("run-1")
    assert (ck.info.samples, ck.info.position) == (12, 12)  # the 12 int-labelled records before it


def test_on_error_skip_also_skips_a_record_the_model_refuses(tmp_path: Path) -> None:
    """A label of another kind is a bad record too: with --on-error skip it is counted and the
    run goes on (found by the reliability fuzz: it stopped the run with exit 1)."""
    rng = np.random.default_rng(0)
    path = tmp_path / "mixed.csv"
    xs = rng.normal(size=(20, 2))
    rows = [f"{a:.3f},{b:.3f},{k}" for (a, b), k in zip(xs, [1, 2] * 10, strict=True)]
    rows[12] = "0.5,0.5,yes"  # line 13 (no header)
    path.write_text("\n".join(rows) + "\n")
    args = ["learn", "-s", str(path), "--hidden", "8", "--no-header", "--on-error", "skip",
            "--json"]  # fmt: skip
    result = ok(args)
    summary = json.loads(result.stdout.splitlines()[-1])
    assert (summary["samples"], summary["rejected"], summary["position"]) == (19, 1, 20)
    assert f"skipped {path} line 13: label 'yes' is a str" in result.stderr


def test_on_error_skip_counts_and_keeps_the_rejects(tmp_path: Path) -> None:
    lines = blobs_csv(tmp_path / "b.csv", n=40).read_text().splitlines()
    lines[5] = "1,2,3"
    lines[9] = "nan,1,2,3,4,b"
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    rejects = tmp_path / "rejects.txt"
    args = ["learn", "-s", str(bad), "--hidden", "8", "--on-error", "skip", "--rejects",
            str(rejects), "--json"]  # fmt: skip
    result = ok(args)
    summary = json.loads(result.stdout.splitlines()[-1])
    assert (summary["samples"], summary["rejected"], summary["position"]) == (38, 2, 40)
    assert rejects.read_text().splitlines() == ["1,2,3", "nan,1,2,3,4,b"]
    assert f"{bad} line 6" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["learn", "-s", "missing.csv"], "missing.csv"),
        (["learn", "-s", "builtin:nope"], "builtin:nope"),
        (["eval", "--db", "none.db"], "none.db"),
        (["predict", "--db", "none.db", "-s", "builtin:mnist"], "none.db"),
        (["runs", "--db", "none.db"], "none.db"),
        (["checkpoints", "--db", "none.db"], "none.db"),
        (["plot", "--db", "none.db"], "none.db"),
    ],
)
def test_missing_things_are_clear_errors(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 1, (result.stdout, result.stderr, result.exception)
    assert result.stderr.startswith("Error: ") and message in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_a_foreign_database_is_refused_untouched(tmp_path: Path) -> None:
    db = tmp_path / "other.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE songs (title TEXT)")
    before = db.read_bytes()
    for args in (["runs"], ["learn", "--limit", "5", "--hidden", "8"]):
        result = runner.invoke(app, [*args, "--db", str(db)])
        assert result.exit_code == 1 and "not a spela-stream database" in result.stderr
    assert db.read_bytes() == before


def test_an_unknown_run_names_the_ones_there() -> None:
    ok(["learn", "--limit", "10", "--hidden", "8", "--run", "mine"])
    for args in (["eval", "--run", "nope"], ["learn", "--resume", "--run", "nope"],
                 ["checkpoints", "--run", "nope"], ["plot", "--run", "nope"]):  # fmt: skip
        result = runner.invoke(app, args)
        assert result.exit_code == 1 and "nope" in result.stderr and "mine" in result.stderr


# ---------------------------------------------------------------- eval, predict, plot


@pytest.fixture
def trained(tmp_path: Path) -> Path:
    """A run that learned 300 MNIST digits (1x64) in runs.db; returns a CSV of the next 200."""
    ok(["learn", "--limit", "300", "--hidden", "64", "--run", "m"])
    return mnist_csv(tmp_path / "next.csv", 200, start=300)


def test_eval_scores_without_learning(trained: Path) -> None:
    with CheckpointStore("runs.db") as store:
        before = store.load("m").state
    result = ok(["eval", "-s", str(trained), "--json"])
    r = json.loads(result.stdout)
    assert r["samples"] == r["n"] == 200 and r["run"] == "m"
    # Measured 0.71 on digits 300-499 after learning 300; chance 0.10.
    assert 0.6 < r["accuracy"] <= 1.0 and 0.5 < r["kappa"] <= 1.0
    assert len(r["layers"]) == 1 and r["layers"][0]["accuracy"] == r["accuracy"]
    # The expected calibration error of the predictions `predict` gives for the same rows.
    from spela_stream.calibration import CalibrationError

    answers = ok(["predict", "-s", str(trained), "--output", "json"]).stdout
    rows = [json.loads(line) for line in answers.splitlines()]
    ece = CalibrationError()
    for row, y in zip(rows, load_mnist(500)[1][300:], strict=True):
        ece.update(row["confidence"], row["label"] == y)
    assert math.isclose(r["ece"], ece.get(), rel_tol=1e-9) and 0.0 < r["ece"] < 0.2  # 0.088
    assert sum(map(sum, r["confusion"])) == 200 and r["classes"] == list(range(10))
    assert {c for c, _ in r["recall"]} == set(range(10))
    with CheckpointStore("runs.db") as store:
        after = store.load("m").state
        assert len(store.checkpoints("m")) == 1  # eval writes nothing
    arrays = [k for k in before if isinstance(before[k], np.ndarray)]
    assert all(np.array_equal(before[k], after[k]) for k in arrays)
    text = ok(["eval", "-s", str(trained)]).stdout
    assert f"accuracy {r['accuracy']:.4f}" in text and "confusion" in text and "recall" in text


def test_eval_of_a_socket_says_which_commands_serve_one(trained: Path) -> None:
    result = runner.invoke(app, ["eval", "-s", "tcp://127.0.0.1:9099"])
    assert result.exit_code == 1, result.output
    assert "Error: tcp://127.0.0.1:9099: a socket is served by learn and predict" in result.stderr


def test_predict_writes_one_line_per_record(trained: Path) -> None:
    lines = ok(["predict", "-s", str(trained)]).stdout.splitlines()
    assert lines[0] == "label,confidence,layer" and len(lines) == 201
    labels = [int(line.split(",")[0]) for line in lines[1:]]
    truth = load_mnist(500)[1][300:]
    assert np.mean(np.array(labels) == truth) > 0.6  # the same model eval scored
    out = ok(["predict", "-s", str(trained), "--output", "json"]).stdout
    rows = [json.loads(x) for x in out.splitlines()]
    assert [r["index"] for r in rows] == list(range(200))
    assert [r["label"] for r in rows] == labels
    assert all(0.0 <= r["confidence"] <= 1.0 and r["layer"] == 0 for r in rows)


def test_predict_takes_unlabelled_stdin(trained: Path) -> None:
    text = "\n".join(",".join(line.split(",")[:-1]) for line in trained.read_text().splitlines())
    result = ok(["predict", "-s", "-", "--label-column", "none"], input=text + "\n")
    assert len(result.stdout.splitlines()) == 201
    # Records exactly as wide as the model's input need no option: they have no label.
    auto = ok(["predict", "-s", "-"], input=text + "\n")
    assert auto.stdout == result.stdout


def test_plot_writes_a_png_that_opens() -> None:
    ok(["learn", "--limit", "500", "--hidden", "16,16", "--every", "100", "--run", "p"])
    result = ok(["plot", "--run", "p", "-o", "curve.png"])
    assert result.stdout.strip() == "curve.png"
    import matplotlib.image

    image = matplotlib.image.imread("curve.png")
    assert image.shape[0] > 700 and image.shape[1] > 600  # 9x8 in: the per-class panel below
    assert image.std() > 0.05  # something was drawn
    lower = image[image.shape[0] * 2 // 3 :, :, :3]
    assert lower.std() > 0.05  # the per-class panel has curves


def test_per_class_figures_in_learn_json_eval_json_and_runs(tmp_path: Path) -> None:
    # --window 20: per-class window 20, so each digit's window fills within 300 samples.
    result = ok(["learn", "--limit", "300", "--every", "100", "--hidden", "64", "--window", "20",
                 "--run", "f", "--json"])  # fmt: skip
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    last = rows[-1]
    assert last["kind"] == "summary" and [c for c, _ in last["class_rolling"]] == list(range(10))
    assert all(0.0 <= v <= 1.0 for _, v in last["class_rolling"])
    forgot = dict(last["class_forgetting"])
    assert forgot and last["forgetting"] == pytest.approx(sum(forgot.values()) / len(forgot))
    assert forgot[last["worst_class"]] == last["worst_forgetting"] == max(forgot.values())
    with CheckpointStore("runs.db", create=False) as store:
        (row,) = [h for h in store.history("f") if h["kind"] == "report" and h["samples"] == 300]
    assert row["class_rolling"] == [[c, round(v, 4)] for c, v in last["class_rolling"]]

    r = json.loads(ok(["eval", "-s", str(mnist_csv(tmp_path / "n.csv", 200, start=300)),
                       "--json"]).stdout)  # fmt: skip
    stream = r["stream"]
    assert stream["forgetting"] == pytest.approx(last["forgetting"])
    assert stream["worst_class"] == [last["worst_class"], last["worst_forgetting"]]
    figs = dict(stream["per_class"])
    recall = dict(r["recall"])
    for c, f in figs.items():
        assert f["rolling"] == pytest.approx(dict(last["class_rolling"])[c])
        if f["best"] is not None:
            assert f["forgetting"] == pytest.approx(forgot[c])
            assert f["drop"] == pytest.approx(f["best"] - recall[c])
    text = ok(["eval", "-s", str(tmp_path / "n.csv")]).stdout
    assert "forgetting" in text and "drop" in text

    (info,) = [json.loads(x) for x in ok(["runs", "--json"]).stdout.splitlines()]
    assert info["summary"]["forgetting"] == pytest.approx(last["forgetting"])
    assert info["summary"]["worst_class"] == [last["worst_class"], last["worst_forgetting"]]
    with CheckpointStore("runs.db", create=False) as store:
        state = store.load("f").state
    held = sum(v.nbytes for k, v in state.items() if k.startswith("memory."))
    assert held >= 300 * 784 * 4  # the replay memory holds all 300 samples learned so far
    assert info["memory_bytes"] == held
    listed = ok(["runs"]).stdout
    assert "forgetting" in listed and f"{last['forgetting']:.4f}" in listed


def test_runs_lists_the_bytes_of_memory_tensors() -> None:
    with CheckpointStore("runs.db") as store:
        run = store.create_run("mem", {"hidden": [8]}, "x.csv")
        state = {"memory.x": np.zeros((10, 4), np.float32), "memory.y": np.zeros(10, np.int64),
                 "layers.0.weight": np.zeros((8, 4), np.float32)}  # fmt: skip
        store.save(run, state=state, samples=1, source="x.csv", position=1, where="")
    (info,) = [json.loads(x) for x in ok(["runs", "--json"]).stdout.splitlines()]
    assert info["memory_bytes"] == 10 * 4 * 4 + 10 * 8
    assert "240B" in ok(["runs"]).stdout


# ---------------------------------------------------------------- the shared real streams

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.skipif(not DATA.is_dir(), reason="the shared streams are not on this machine")
@pytest.mark.parametrize(
    ("path", "extra", "floor"),
    [
        # Measured after 2,000 samples with 1x256: 0.870, 0.444, 0.930, 0.814.
        ("elec2/elecNormNew.arff", [], 0.80),
        ("letter/letter-recognition.data", ["--label-column", "0"], 0.35),
        ("optdigits/optdigits.tra", [], 0.88),
        ("mnist-test/t10k-images-idx3-ubyte.gz", [], 0.75),
    ],
)
def test_learn_reads_each_shared_stream(path: str, extra: list[str], floor: float) -> None:
    source = str(DATA / path)
    result = ok(["learn", "-s", source, "--limit", "2000", "--hidden", "256", "-q", *extra])
    match = re.fullmatch(
        rf"accuracy (\S+) after 2000 samples of {re.escape(source)}\n", result.stdout
    )
    assert match is not None, result.stdout
    assert floor < float(match.group(1)) <= 1.0


# ---------------------------------------------------------------- no input crashes the command

TOKEN = st.sampled_from(["1", "-2.5", "0", "1e40", "1e400", "nan", "inf", "", " ", "x", '"q"', "7"])
ROWS = st.lists(st.lists(TOKEN, min_size=1, max_size=4).map(",".join), max_size=12)
CSV_TEXT = st.one_of(
    ROWS.map("\n".join),  # mostly well-formed rows with bad values and ragged widths
    st.text(alphabet=st.sampled_from(list('0123456789.,-e\n "abnNiIf\t{}[]:#?@'))),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(content=st.one_of(CSV_TEXT, st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
def test_any_file_is_learned_or_refused_never_a_crash(tmp_path: Path, content: str) -> None:
    path = tmp_path / "fuzz.csv"
    path.write_text(content, encoding="utf-8")
    db = tmp_path / "fuzz.db"
    for args in (
        ["learn", "-s", str(path), "--hidden", "4"],
        ["learn", "-s", "-", "--hidden", "4"],
    ):
        result = runner.invoke(app, [*args, "--db", str(db), "-q", "--on-error", "skip"],
                               input=content)  # fmt: skip
        assert isinstance(result.exception, SystemExit | None), repr(result.exception)
        assert result.exit_code in (0, 1), (result.exit_code, result.stderr)
        if result.exit_code == 1:
            assert result.stderr.splitlines()[-1].startswith("Error: ")


HOLD_LEASE = """
import sys
from storage import CheckpointStore
with CheckpointStore(sys.argv[1]) as store, store.writer("w"):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_a_second_writer_of_a_run_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    """Issue 12, defect 2: two `learn --resume --run w` at once; the second exits 1."""
    import os
    import subprocess
    import sys

    data = blobs_csv(tmp_path / "b.csv", 200)
    ok(["learn", "-s", str(data), "--run", "w", "--hidden", "16", "-q"])
    with CheckpointStore("runs.db", create=False) as store:
        before = store.checkpoints("w")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LEASE, "runs.db"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        more = blobs_csv(tmp_path / "more.csv", 100, seed=1)
        result = runner.invoke(app, ["learn", "--resume", "--run", "w", "-s", str(more), "-q"])
        assert result.exit_code == 1, result.output
        assert f"Error: run 'w' is being learned by pid {holder.pid} on " in result.stderr
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        assert holder.wait(30) == 0
    with CheckpointStore("runs.db", create=False) as store:
        assert store.checkpoints("w") == before  # the refused writer wrote nothing
    ok(["learn", "--resume", "--run", "w", "-s", str(more), "-q"])  # free again: it goes on


def test_memory_option_sizes_or_turns_off_the_replay_memory(tmp_path: Path) -> None:
    data = blobs_csv(tmp_path / "b.csv", 200)
    ok(["learn", "-s", str(data), "--run", "off", "--hidden", "16", "--memory", "0", "-q"])
    ok(["learn", "-s", str(data), "--run", "small", "--hidden", "16", "--memory", "40", "-q"])
    with CheckpointStore("runs.db", create=False) as store:
        off, small = store.load("off").state, store.load("small").state
    assert off["config"]["memory"] == 0 and not any(k.startswith("memory.") for k in off)
    assert small["config"]["memory"] == 40 and small["memory.x"].shape == (40, 5)
    result = runner.invoke(app, ["learn", "--resume", "--run", "small", "--memory", "10"])
    assert result.exit_code != 0 and "--memory cannot change a resumed run" in result.output


def test_contrast_option_picks_the_local_loss(tmp_path: Path) -> None:
    data = blobs_csv(tmp_path / "b.csv", 200)
    ok(["learn", "-s", str(data), "--run", "default", "--hidden", "16", "-q"])
    ok(["learn", "-s", str(data), "--run", "paper", "--hidden", "16", "--contrast", "0", "-q"])
    with CheckpointStore("runs.db", create=False) as store:
        default, paper = store.load("default").state, store.load("paper").state
    assert default["config"]["contrast"] == 0.1 and paper["config"]["contrast"] == 0.0
    assert not np.array_equal(default["layers.0.weight"], paper["layers.0.weight"])
    result = runner.invoke(app, ["learn", "--resume", "--run", "paper", "--contrast", "0.1"])
    assert result.exit_code != 0 and "--contrast cannot change a resumed run" in result.output
    result = runner.invoke(app, ["learn", "-s", str(data), "--contrast", "-1"])
    assert result.exit_code == 2 and "--contrast" in result.output
