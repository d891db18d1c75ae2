"""What a new user meets first (issue 13): help at 80 columns, one style of message, runs with no
data, one format on stdout, the rejects' sidecar, plot's options, the flags messages name."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import numpy as np
import pytest
import typer.main
from typer.testing import CliRunner, Result

from cli.app import app
from spela_stream.plot import CurveView, axis_scale, source_name
from storage import CheckpointStore

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
GROUP = typer.main.get_command(app)
COMMANDS = [[name] for name in sorted(GROUP.commands)] + [["checkpoints", "verify"]] + [
    ["fleet", "server"], ["fleet", "device"]]  # fmt: skip


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SPELA_DB", raising=False)


def blobs_csv(path: Path, n: int = 120, seed: int = 0, header: bool = True) -> Path:
    """Three separable 4-feature classes a..c."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(3, 4))
    k = rng.integers(0, 3, n)
    X = centres[k] + rng.normal(size=(n, 4))
    with path.open("w") as fh:
        if header:
            fh.write("f0,f1,f2,f3,kind\n")
        for row, c in zip(X, k, strict=True):
            fh.write(",".join(f"{v:.4f}" for v in row) + f",{'abc'[c]}\n")
    return path


def ok(args: list[str], input: str | None = None) -> Result:
    result = runner.invoke(app, args, input=input)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result


# ---------------------------------------------------------------- help (item 4)


@pytest.mark.parametrize("cmd", COMMANDS, ids=" ".join)
def test_help_fits_80_columns_uncut_and_flags_show_no_bool(cmd: list[str]) -> None:
    result = runner.invoke(app, [*cmd, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout and "..." not in result.stdout.replace("ARGS]...", "")
    assert "<bool>" not in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 80


def test_learn_help_is_grouped_and_short() -> None:
    out = runner.invoke(app, ["learn", "--help"], env={"COLUMNS": "80"}).stdout
    for panel in ("Model", "Input", "Checkpoints", "Output", "Camera and images", "Service"):
        assert f"─ {panel}" in out, panel
    # it was about 210 at 80 columns; 138 under typer 0.29 (rich 15), 142 under the typer 0.20
    # (rich 14) that the fleet extra's flwr brings; --input-readout and --contrast then added 8
    assert len(out.splitlines()) < 150


@pytest.mark.parametrize("name", ["eval", "predict", "plot"])
def test_run_option_of_commands_that_read_a_run_says_the_latest(name: str) -> None:
    out = runner.invoke(app, [name, "--help"], env={"COLUMNS": "120"}).stdout
    line = next(s for s in out.splitlines() if "--run " in s)
    assert "the latest" in line and "new" not in line


def test_version() -> None:
    result = ok(["--version"])
    assert re.fullmatch(r"spela-stream \d+\.\d+\.\d+\S*\n", result.stdout)


# ---------------------------------------------------------------- messages (item 9)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["learn", "--format", "xml"], "Error: Invalid value for '--format': 'xml' is not one of"),
        (["learn", "--resume", "true"], "a flag such as --resume takes no value"),
        # click's own wording differs between the typer versions spela-stream admits: typer
        # 0.29 (its own validation, reworded) and 0.20 (the fleet extra: flwr needs typer<0.21)
        (
            ["learn", "--lr", "x"],
            (
                "Error: Invalid value for '--lr': not a number",
                "Error: Invalid value for '--lr': 'x' is not a valid float.",
            ),
        ),
        (["learn", "--nope"], ("Error: No such option: --nope", "Error: No such option '--nope'")),
        (["nope"], "Error: No such command 'nope'"),
    ],
)
def test_usage_errors_are_error_lines_not_boxes(
    args: list[str], needle: str | tuple[str, ...]
) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    needles = (needle,) if isinstance(needle, str) else needle
    assert any(n in result.stderr for n in needles), result.stderr
    assert "╭" not in result.stderr and "Value error" not in result.stderr
    assert "Input should be" not in result.stderr
    assert re.fullmatch(r"Try '.+ --help' for help\.", result.stderr.splitlines()[-1])


def flags_of_app() -> set[str]:
    """Every option name of every command."""
    found: set[str] = set()

    def walk(cmd: object) -> None:
        for p in getattr(cmd, "params", []):
            found.update(o for o in (*p.opts, *p.secondary_opts) if o.startswith("--"))
        for sub in getattr(cmd, "commands", {}).values():
            walk(sub)

    walk(GROUP)
    return found | {"--help"}


def message_strings(path: Path) -> list[str]:
    """The text of every string constant and f-string in a module, docstrings left out."""
    tree = ast.parse(path.read_text())
    docs = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
    ]


# The flags of flwr's own commands (flower-superlink, flower-supernode, flwr run), which
# spela_stream/fleet_procs.py starts: theirs, not spela-stream's.
FLWR_FLAGS = {"--insecure", "--host", "--port", "--disable-runtime-dependency-installation",
              "--superlink", "--node-config", "--format", "--run-config"}  # fmt: skip


def test_every_flag_a_message_names_exists() -> None:
    flags = flags_of_app()
    named: dict[str, set[str]] = {}
    for package in ("spela_stream", "storage", "cli"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for text in message_strings(path):
                for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*[a-z]", text):
                    named.setdefault(flag, set()).add(path.name)
    assert "--features" in named or "--label-column" in named  # the scan finds messages
    unknown = {
        f: sorted(where)
        for f, where in named.items()
        if f not in flags and not (where == {"fleet_procs.py"} and f in FLWR_FLAGS)
    }
    assert unknown == {}


def test_library_names_parameters_and_the_cli_names_flags(tmp_path: Path) -> None:
    from spela_stream.sources import open_source

    data = tmp_path / "d.svm"
    data.write_text("1 1:0.5 9:1\n")
    with pytest.raises(Exception, match=r"n_features") as info:
        with open_source(str(data), n_features=2) as src:
            list(src)
    assert "--" not in str(info.value)
    result = runner.invoke(app, ["learn", "-s", str(data), "--features", "2", "--hidden", "8"])
    assert result.exit_code == 1, result.output
    assert "--features" in result.stderr and "n_features" not in result.stderr


def test_eval_confusion_header_has_no_stray_dash(tmp_path: Path) -> None:
    data = blobs_csv(tmp_path / "b.csv")
    ok(["learn", "-s", str(data), "--hidden", "16", "--run", "b", "-q"])
    out = ok(["eval", "-s", str(data), "--run", "b"]).stdout
    lines = out.splitlines()
    at = lines.index("confusion (rows: truth, columns: prediction)")
    header, rule = lines[at + 1], lines[at + 2]
    assert header.split() == ["truth", "a", "b", "c"], header
    widths = [len(d) for d in rule.split()]
    assert widths[0] == len("truth") and len(widths) == 4, rule  # every dash run under a name


# ---------------------------------------------------------------- plot (item 6)


def test_plot_axis_window_and_titles() -> None:
    assert axis_scale("auto", [1, 2, 4, 1000]) == "log"
    assert axis_scale("auto", [10, 20, 500]) == "linear"
    assert axis_scale("linear", [1, 100_000]) == "linear"
    assert axis_scale("log", [10, 20]) == "log"
    view = CurveView(start=10, end=100)
    assert [view.within(n) for n in (9, 10, 100, 101)] == [False, True, True, False]
    assert source_name("-") == "stdin" and source_name("a.csv") == "a.csv"


def test_plot_options_and_which_run(tmp_path: Path) -> None:
    data = blobs_csv(tmp_path / "b.csv", n=300)
    ok(["learn", "-s", "-", "--hidden", "16,16", "--run", "s", "--every", "20", "-q"],
       input=data.read_text())  # fmt: skip
    result = ok(["plot", "-o", "c.png", "--x", "linear", "--start", "5", "--end", "200",
                 "--layers", "1", "--classes", "2"])  # fmt: skip
    assert result.stdout == "c.png\n"
    assert "plotting run 's', the latest (--run to choose)" in result.stderr
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    named = ok(["plot", "--run", "s", "-o", "d.png", "--layers", "none", "--classes", "0"])
    assert named.stderr == ""
    bad = runner.invoke(app, ["plot", "--layers", "2"])
    assert bad.exit_code == 2 and "layer 2: run 's' has layers 0 to 1" in bad.stderr
    empty = runner.invoke(app, ["plot", "--start", "100000"])
    assert empty.exit_code == 2 and "no rows of run 's' between samples 100000" in empty.stderr


# ---------------------------------------------------------------- runs with no data (item 5)


def test_a_header_only_file_is_an_error_like_an_empty_one(tmp_path: Path) -> None:
    (tmp_path / "h.csv").write_text("f0,f1,kind\n")
    (tmp_path / "e.csv").write_text("")
    for name, why in (("h.csv", "only a header line"), ("e.csv", "the file is empty")):
        result = runner.invoke(app, ["learn", "-s", str(tmp_path / name), "--hidden", "8"])
        assert result.exit_code == 1, result.output
        assert f"no records ({why}; give a stream with data)" in result.stderr
        assert result.stdout == ""
    assert not (tmp_path / "runs.db").exists()


def test_a_run_that_fails_before_any_record_is_not_kept(tmp_path: Path) -> None:
    good = blobs_csv(tmp_path / "b.csv", n=30)
    ok(["learn", "-s", str(good), "--hidden", "8", "--run", "kept", "-q"])
    bad = tmp_path / "bad.csv"
    bad.write_text("f0,f1,kind\nx,1,a\n")
    result = runner.invoke(app, ["learn", "-s", str(bad), "--hidden", "8", "--run", "gone"])
    assert result.exit_code == 1 and "bad.csv line 2" in result.stderr
    assert "run 'gone' removed: it failed before its first record" in result.stderr
    with CheckpointStore(tmp_path / "runs.db", create=False) as store:
        assert [r.name for r in store.runs()] == ["kept"]
    # a failure after some records keeps them (and the run), as before
    bad.write_text("f0,f1,f2,f3,kind\n1,2,3,4,a\nx,1,2,3,a\n")
    result = runner.invoke(app, ["learn", "-s", str(bad), "--hidden", "8", "--run", "half"])
    assert result.exit_code == 1, result.output
    with CheckpointStore(tmp_path / "runs.db", create=False) as store:
        assert store.run("half").samples == 1


def test_a_failed_first_learn_leaves_no_database(tmp_path: Path) -> None:
    for source in ("missing.csv", "camera:missing.avi"):
        result = runner.invoke(app, ["learn", "-s", source, "--db", "new.db"])
        assert result.exit_code == 1 and "Error: missing" in result.stderr, result.output
        assert sorted(p.name for p in tmp_path.iterdir()) == [], source


# ---------------------------------------------------------------- one format on stdout (item 3)


def test_a_camera_run_that_learns_and_predicts_prints_json_lines_only(tmp_path: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 25, (16, 16))
    colours = [(30, 30, 220)] * 6 + [(30, 220, 30)] * 6 + [(30, 30, 220)] * 4
    for bgr in colours:
        img = np.clip(np.array(bgr) + rng.integers(-20, 20, (16, 16, 3)), 0, 255)
        writer.write(img.astype(np.uint8))
    writer.release()
    track = tmp_path / "labels.txt"
    track.write_text("0,6,red\n6,12,green\n")  # frames 12..15 carry no label: predicted
    args = ["learn", "-s", f"camera:{clip}", "--backbone", "none", "--size", "8"]
    result = ok([*args, "--labels", str(track), "--hidden", "16"])
    rows = [json.loads(line) for line in result.stdout.splitlines()]  # every line is JSON
    assert [r["index"] for r in rows] == [12, 13, 14, 15]
    assert {r["kind"] for r in rows} == {"prediction"}
    assert "12 learned, 4 predicted), accuracy " in result.stderr


# ---------------------------------------------------------------- the rejects' sidecar (item 7)


def test_rejects_keep_raw_lines_and_say_where_and_why_beside_them(tmp_path: Path) -> None:
    lines = blobs_csv(tmp_path / "b.csv", n=30).read_text().splitlines()
    lines[3] = "1,2,3"  # line 4: too few fields
    lines[7] = "1,x,2,3,a"  # line 8: field 2 is not a number
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    rejects = tmp_path / "rejects.csv"
    args = ["learn", "-s", str(bad), "--hidden", "8", "--on-error", "skip", "-q"]
    ok([*args, "--rejects", str(rejects)])
    assert rejects.read_text().splitlines() == ["1,2,3", "1,x,2,3,a"]
    why = [json.loads(s) for s in (tmp_path / "rejects.csv.where").read_text().splitlines()]
    assert [(w["line"], w["field"], w["record"]) for w in why] == [(4, None, 2), (8, 2, 6)]
    assert why[0]["where"] == f"{bad} line 4" and "3 fields, expected 5" in why[0]["reason"]
    assert "not a number" in why[1]["reason"]
    # the raw lines replay: read again (with the header), they are refused for the same reasons
    replay = tmp_path / "replay.csv"
    replay.write_text(lines[0] + "\n" + rejects.read_text())
    again = tmp_path / "again.csv"
    ok([*args, "-s", str(replay), "--rejects", str(again)])
    reasons = [json.loads(s)["reason"] for s in (tmp_path / "again.csv.where").open()]
    assert reasons == [w["reason"] for w in why]
