"""Terminal formatting: rows, sizes, tables, and a live line only where there is a terminal."""

from __future__ import annotations

import io
import json

from cli.output import Progress
from spela_stream.datasets import iter_mnist
from spela_stream.display import HEADER, human_bytes, report_json, row, table
from spela_stream.model import SpelaMLP
from spela_stream.prequential import Prequential, Report


def _report(**kw: object) -> Report:
    base: dict[str, object] = {
        "samples": 2048, "scored": 2047, "accuracy": 0.81234, "rolling_accuracy": 0.9,
        "layer_accuracy": (0.8, 0.81), "last_label": "UP", "last_prediction": "DOWN",
        "samples_per_s": 1534.4, "elapsed_s": 1.3, "kappa": 0.75, "layer_rolling": (0.85, 0.9),
        "model_bytes": 7_700_000, "drift": True,
    }  # fmt: skip
    return Report(**{**base, **kw})  # type: ignore[arg-type]


def test_row_has_every_column_and_marks_drift() -> None:
    fields = row(_report()).split()
    assert fields == [
        "2048", "0.8123", "0.9000", "0.7500", "UP", "DOWN", "1534", "7.3M", "-", "0.850",
        "0.900", "drift",
    ]  # fmt: skip
    assert "drift" not in row(_report(drift=False))
    assert row(_report(forgetting=0.12345)).split()[8] == "0.123"
    assert len(row(_report(forgetting=0.5))) == len(row(_report()))
    assert len(HEADER.split()) >= 9


def test_long_labels_are_cut_to_keep_the_columns() -> None:
    line = row(_report(last_label="a-very-long-label", last_prediction=None))
    assert "a-very-l" in line and " - " in line
    assert len(line) == len(row(_report()))


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (0, 1023, 1536, 7_700_000, 3 * 1024**3)] == [
        "0B", "1023B", "1.5K", "7.3M", "3.0G",
    ]  # fmt: skip


def test_report_json_is_one_object_per_line() -> None:
    text = report_json(_report(), kind="summary")
    assert "\n" not in text
    obj = json.loads(text)
    assert (
        obj["kind"] == "summary" and obj["samples"] == 2048 and obj["layer_rolling"] == [0.85, 0.9]
    )


def test_report_json_keeps_label_types_in_per_class_pairs() -> None:
    pairs = ((True, 0.5), (3, 0.25), ("3", 1.0))
    obj = json.loads(
        report_json(
            _report(
                class_rolling=pairs,
                class_forgetting=pairs[:1],
                forgetting=0.5,
                worst_class=True,
                worst_forgetting=0.5,
            )
        )
    )
    assert obj["class_rolling"] == [[True, 0.5], [3, 0.25], ["3", 1.0]]
    assert obj["class_forgetting"] == [[True, 0.5]]
    assert (obj["forgetting"], obj["worst_class"], obj["worst_forgetting"]) == (0.5, True, 0.5)


def test_table_aligns_numbers_right_and_text_left() -> None:
    out = table([["a", 1, None], ["bbb", 100, "x"]], ["run", "n", "note"]).splitlines()
    assert out[0] == "run    n  note"
    assert out[1] == "---  ---  ----"
    assert out[2] == "a      1  -"
    assert out[3] == "bbb  100  x"


def _loop(n: int) -> Prequential:
    loop = Prequential(SpelaMLP(hidden=(8,)))
    for x, y in iter_mnist(n):
        loop.step(x, y, where="builtin:mnist")
    return loop


def test_without_a_terminal_there_is_no_live_line() -> None:
    err, out = io.StringIO(), io.StringIO()
    progress = Progress(err=err, out=out)  # StringIO is not a tty
    loop = _loop(20)
    progress.tick(loop)
    progress.report(loop.report())
    progress.close()
    assert "\r" not in err.getvalue() and "\x1b" not in err.getvalue()
    assert err.getvalue().splitlines()[0] == HEADER and out.getvalue() == ""


def test_a_terminal_gets_a_live_line_that_is_cleared_before_rows() -> None:
    err = io.StringIO()
    progress = Progress(err=err, out=io.StringIO(), live=True)
    loop = _loop(20)
    progress.tick(loop)
    assert err.getvalue().startswith("\r\x1b[K20 samples")
    progress.report(loop.report())
    assert "\r\x1b[K" + HEADER in err.getvalue()  # the live line is wiped, then the table
    progress.close()


def test_json_mode_writes_rows_to_stdout_only() -> None:
    err, out = io.StringIO(), io.StringIO()
    progress = Progress(json_out=True, err=err, out=out)
    progress.report(_loop(5).report())
    assert err.getvalue() == ""
    assert json.loads(out.getvalue())["samples"] == 5


def test_drift_news_is_logged_once() -> None:
    err = io.StringIO()
    progress = Progress(err=err, out=io.StringIO())
    loop = _loop(3)
    loop.metrics.drifts.extend([2, 3])
    progress.tick(loop)
    progress.tick(loop)
    assert err.getvalue().count("drift detected") == 2


def test_quiet_prints_nothing() -> None:
    err = io.StringIO()
    progress = Progress(quiet=True, err=err, out=io.StringIO())
    loop = _loop(3)
    progress.report(loop.report())
    progress.log("news")
    assert err.getvalue() == ""
