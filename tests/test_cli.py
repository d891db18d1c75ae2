"""The typer app: help everywhere, stdout for the product, stderr for progress, exit codes."""

from __future__ import annotations

import json
import re

import pytest
import typer.main
from typer.testing import CliRunner

from cli.app import app

runner = CliRunner()
COMMANDS = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
ROW = re.compile(r"^\s+\d+\s+\d\.\d{4}\s+\d\.\d{4}\s")  # a progress row: samples cum.acc roll.acc


def test_app_help() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    assert "SPELA" in result.stdout
    for name in COMMANDS:
        assert name in result.stdout


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help(name: str) -> None:
    result = runner.invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.stdout and "--help" in result.stdout


def test_learn_has_the_documented_options() -> None:
    out = runner.invoke(app, ["learn", "--help"]).stdout
    for option in ("--hidden", "--lr", "--report", "--limit", "--every", "--json"):
        assert option in out


def test_learn_stdout_is_the_result_and_progress_goes_to_stderr() -> None:
    result = runner.invoke(app, ["learn", "--limit", "300", "--every", "100", "--hidden", "32"])
    assert result.exit_code == 0, result.output
    # typer 0.29 / click 8.2+: CliRunner keeps the two streams apart.
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    match = re.fullmatch(r"accuracy (\d\.\d{4}) after 300 samples of builtin:mnist", lines[0])
    assert match is not None, result.stdout
    # 32 hidden units, 300 digits, default lr: measured 0.535; chance is 0.10.
    assert 0.4 < float(match.group(1)) <= 1.0
    err = result.stderr.splitlines()
    assert "samples" in err[0] and "cum.acc" in err[0]
    rows = [line for line in err if ROW.match(line)]
    assert [int(r.split()[0]) for r in rows] == [100, 200, 300]
    assert "accuracy" not in result.stderr


def test_learn_json_rows() -> None:
    args = ["learn", "--limit", "250", "--every", "100", "--hidden", "16,8", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["samples"] for r in rows] == [100, 200, 250]
    for r in rows:
        assert isinstance(r, dict)
        assert 0.0 <= r["accuracy"] <= 1.0
        assert len(r["layer_accuracy"]) == 2
        assert r["last_label"] in range(10)
    assert "accuracy " not in result.stdout  # no human line mixed into JSON output
    assert len([line for line in result.stderr.splitlines() if ROW.match(line)]) == 3


@pytest.mark.parametrize("hidden", ["a,b", "", "8,-1", "0", "1.5", "16,,8"])
def test_bad_hidden_exits_2(hidden: str) -> None:
    result = runner.invoke(app, ["learn", "--hidden", hidden, "--limit", "5"])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert "--hidden" in result.stderr or "Invalid value" in result.stderr


def test_bad_every_exits_2() -> None:
    result = runner.invoke(app, ["learn", "--every", "0", "--limit", "5", "--hidden", "8"])
    assert result.exit_code == 2, result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--report", "x"], "report"), (["--lr", "0"], "lr"), (["--lr", "-1"], "lr")],
)
def test_bad_config_is_an_error_line_and_exit_1(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["learn", "--hidden", "8", "--limit", "5", *args])
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr.startswith("Error: ") and message in result.stderr
    assert isinstance(result.exception, SystemExit)  # handled, not a traceback


@pytest.mark.parametrize("limit", ["0", "-5"])
def test_non_positive_limit_is_handled(limit: str) -> None:
    result = runner.invoke(app, ["learn", "--hidden", "8", "--limit", limit])
    assert isinstance(result.exception, SystemExit | None), repr(result.exception)
    assert result.exit_code in (0, 2), result.output
