"""The spela-stream command line: options -> library calls -> formatted output.

stdout carries only the command's product; progress and logs go to stderr. A ``SpelaError``
becomes ``Error: ...`` and exit 1, a bad option value exit 2, Ctrl-C a checkpoint and exit 130.
Usage errors (an unknown option, a bad value) are ``Error: ...`` lines too, not rich boxes.
"""

from __future__ import annotations

import contextlib
import enum
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from typer.core import TyperCommand, TyperGroup

from spela_stream.config import (
    EvalOptions,
    FrameOptions,
    Input,
    LearnOptions,
    OnError,
    Output,
    PredictOptions,
    ServeOptions,
    parse_columns,
    parse_hidden,
    parse_layers,
)
from spela_stream.errors import ConfigError
from spela_stream.plot import CurveView
from spela_stream.sources.tcp import MAX_LINE, PENDING, WINDOW

from . import fleet, listing
from .flags import (
    CHECKPOINTS,
    INPUT,
    MODEL,
    OUTPUT,
    REPORTS,
    Backbone,
    Changes,
    Checkpoint,
    Columns,
    Db,
    Features,
    Format,
    Fps,
    Header,
    Host,
    Json,
    Label,
    LabelColumn,
    LabelPort,
    Labels,
    MaxLine,
    Pending,
    Publish,
    Run,
    Size,
    Source,
    Threads,
    option,
)  # fmt: skip
from .options import guarded

T = TypeVar("T")


class Command(TyperCommand):
    """A command whose ``--help`` shows no ``<bool>`` (it takes no value)."""

    def get_help_option(self, ctx: Any) -> Any:
        found = super().get_help_option(ctx)
        if found is not None:
            found.metavar = ""
        return found


class App(TyperGroup):
    """The root command: usage errors print one ``Error:`` line and a hint, exit 2."""

    def get_help_option(self, ctx: Any) -> Any:
        found = super().get_help_option(ctx)
        if found is not None:
            found.metavar = ""
        return found

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        def run() -> Any:
            return super(App, self).main(args, prog_name, complete_var, False,
                                         windows_expand_args, **extra)  # fmt: skip

        if not standalone_mode:
            return run()
        try:
            code = run()
        except typer.Abort:
            typer.echo("Aborted.", err=True)
            sys.exit(1)
        except Exception as exc:  # click's UsageError and kin: typer does not re-export them
            message = getattr(exc, "format_message", None)
            if message is None or not hasattr(exc, "exit_code"):
                raise
            if type(exc).__name__ != "NoArgsIsHelpError":  # that one has printed the help
                typer.echo(f"Error: {usage_message(message())}", err=True)
                ctx = getattr(exc, "ctx", None)
                if ctx is not None:
                    typer.echo(f"Try '{ctx.command_path} --help' for help.", err=True)
            sys.exit(exc.exit_code)
        sys.exit(code if isinstance(code, int) else 0)


def usage_message(text: str) -> str:
    """typer's message without the wording of the validation layer under it."""
    if text.startswith("Got unexpected extra argument"):
        text += "; a flag such as --resume takes no value"
    return text.replace("Value error, ", "").replace(
        "Input should be a valid number, unable to parse string as a number", "not a number"
    )


app = typer.Typer(
    cls=App,
    help="Learn continuously from a stream, one sample at a time, with SPELA.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # paragraphs reflow to the terminal's width
)


def _commands() -> ModuleType:
    """learn, eval and predict, with torch: loaded only when one of them runs."""
    from . import commands

    # The imports leave ~230k long-lived objects; without this a full collection (~120 ms) can
    # land inside a checkpoint or a sample. Freezing moves them out of the collector's sight.
    gc.freeze()
    return commands


def version() -> str:
    """The installed package's version (the source tree's when it is not installed)."""
    try:
        return metadata.version("spela-stream")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a bare checkout
        return "unknown (not installed)"


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"spela-stream {version()}")
        raise typer.Exit(0)


@app.callback()
def _root(
    _version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", metavar="",
                     callback=_show_version, is_eager=True),
    ] = False,
) -> None:  # fmt: skip
    """Learn continuously from a stream, one sample at a time, with SPELA."""


def _parsed(parse: Callable[[str | None], T], value: str | None) -> T:
    """An option's text parsed by the library (``spela_stream.config``); a bad value is a usage
    error (exit 2, with the ``--help`` hint), raised before torch loads."""
    try:
        return parse(value)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None


def _input(
    source: str,
    fmt: enum.StrEnum | None,
    label_column: str | None,
    header: bool | None,
    features: int | None,
    frames: FrameOptions | None = None,
) -> Input:
    kind = None if fmt is None else fmt.value
    return Input(source, kind, label_column, header, features, frames)


# ---------------------------------------------------------------- commands

LEARN_SOURCE = (
    "A file (csv, tsv, jsonl, arff, libsvm, npy, npz, idx; .gz too), - for stdin, "
    "builtin:mnist (the default), camera:N|VIDEO|URL, images:DIR, or tcp://HOST:PORT or "
    "mqtt://HOST/TOPIC to serve clients (a resumed run: its own source)."
)


@app.command(cls=Command)
def learn(
    source: Annotated[str, option(INPUT, LEARN_SOURCE, "--source", "-s", show_default=False)] = "",
    fmt: Format = None,
    label_column: LabelColumn = None,
    header: Header = None,
    features: Features = None,
    limit: Annotated[
        int | None, option(INPUT, "Stop when the run has seen N samples.", min=1)
    ] = None,
    on_error: Annotated[OnError, option(INPUT, "A bad record: stop (raise) or skip it.")] = (
        OnError.raise_
    ),
    rejects: Annotated[
        Path | None,
        option(
            INPUT, "With --on-error skip: append bad lines here (and where and why to FILE.where)."
        ),
    ] = None,  # fmt: skip
    hidden: Annotated[
        str | None,
        option(
            MODEL,
            "Layer widths, or auto (default: auto = 512,512 up to 64 input features, else "
            "1024,1024; camera and images: 1024).",
        ),
    ] = None,  # fmt: skip
    lr: Annotated[float | None, option(MODEL, "Local step size (default: 10).")] = None,
    report: Annotated[
        str | None, option(MODEL, f"Reported layer: {', '.join(REPORTS)} (default: last).")
    ] = None,
    seed: Annotated[int | None, option(MODEL, "Seed of weights, class vectors.")] = None,
    memory: Annotated[
        int | None,
        option(
            MODEL,
            "Replay memory of N samples (default: 1000; 0: off).",
            min=0,
        ),
    ] = None,  # fmt: skip
    contrast: Annotated[
        float | None,
        option(MODEL, "Contrastive loss temperature (default: 0.1; 0: the paper's).", min=0),
    ] = None,
    input_readout: Annotated[
        int | None,
        option(
            MODEL,
            "Class means of the last N inputs vote too (frames: 2000; 0: off).",
            min=0,
            show_default=False,
        ),
    ] = None,  # fmt: skip
    threads: Threads = 1,
    db: Db = Path("runs.db"),
    run: Annotated[
        str | None, option(CHECKPOINTS, "Run name (default: a new one; --resume: the latest).")
    ] = None,
    resume: Annotated[
        bool,
        option(CHECKPOINTS, "Continue the run from its latest checkpoint.", "--resume", flag=True),
    ] = False,  # fmt: skip
    checkpoint: Annotated[
        int | None, option(CHECKPOINTS, "With --resume: from this checkpoint id (default: latest).")
    ] = None,
    skip: Annotated[
        int | None,
        option(
            CHECKPOINTS,
            "With --resume: pass over N records (default: a file goes on after "
            "its last record; live sources skip none).",
            min=0,
        ),
    ] = None,  # fmt: skip
    checkpoint_every: Annotated[
        int | None, option(CHECKPOINTS, "Checkpoint every N samples.", min=1)
    ] = None,
    checkpoint_seconds: Annotated[
        float, option(CHECKPOINTS, "Checkpoint every S seconds (0: only at the end).", min=0)
    ] = 60.0,
    keep: Annotated[int, option(CHECKPOINTS, "Checkpoints kept per run (0: all).", min=0)] = 3,
    every: Annotated[int, option(OUTPUT, "A progress row every N samples.", min=1)] = 1000,
    window: Annotated[int, option(OUTPUT, "Rolling accuracy window.", min=1)] = 1000,
    json_out: Json = False,
    quiet: Annotated[
        bool, option(OUTPUT, "No progress on stderr.", "--quiet", "-q", flag=True)
    ] = False,
    backbone: Backbone = None,
    size: Size = None,
    label: Label = None,
    labels: Labels = None,
    label_port: LabelPort = None,
    fps: Fps = None,
    changes: Changes = False,
    host: Host = None,
    pending: Pending = PENDING,
    max_line: MaxLine = MAX_LINE,
    columns: Columns = None,
    publish: Publish = None,
) -> None:
    """Learn a stream test-then-train, report prequential accuracy, checkpoint to SQLite.

    Frames from a camera or images:DIR pass through a frozen image model and a SPELA head learns
    on its features; unlabelled frames are predicted (a JSON line each). With --source
    tcp://HOST:PORT it is a service that answers each line a client sends with the prediction
    made before learning from it (README: Serving over TCP; MQTT in and out).
    """
    frames = FrameOptions(backbone, size, label, labels, label_port, fps, changes)
    opts = LearnOptions(
        input=_input(source, fmt, label_column, header, features, frames),
        db=db, run=run, resume=resume, checkpoint=checkpoint, skip=skip,
        model={"hidden": _parsed(parse_hidden, hidden), "lr": lr, "report": report, "seed": seed,
               "memory": memory, "input_readout": input_readout, "contrast": contrast},
        every=every, window=window, limit=limit,
        checkpoint_every=checkpoint_every, checkpoint_seconds=checkpoint_seconds or None,
        keep=keep or None, on_error=on_error, rejects=rejects,
        json_out=json_out, quiet=quiet, threads=threads,
        serve=ServeOptions(host, pending, max_line, _parsed(parse_columns, columns), publish),
    )  # fmt: skip
    guarded(_commands().learn, opts)


@app.command("eval", cls=Command)
def eval_(
    source: Source = "builtin:mnist",
    fmt: Format = None,
    label_column: LabelColumn = None,
    header: Header = None,
    features: Features = None,
    limit: Annotated[int | None, option(INPUT, "Score at most N samples.", min=1)] = None,
    labels: Labels = None,
    db: Db = Path("runs.db"),
    run: Run = None,
    checkpoint: Checkpoint = None,
    window: Annotated[int, option(OUTPUT, "Rolling accuracy window.", min=1)] = 1000,
    json_out: Json = False,
    threads: Threads = 1,
) -> None:
    """Score a saved model on a stream without learning: accuracy, kappa, recall, confusion."""
    guarded(
        _commands().evaluate,
        EvalOptions(
            _input(source, fmt, label_column, header, features, FrameOptions(labels=labels)),
            db, run, checkpoint, limit, window, json_out, threads,
        ),
    )  # fmt: skip


@app.command(cls=Command)
def predict(
    source: Source = "-",
    fmt: Format = None,
    label_column: LabelColumn = None,
    header: Header = None,
    features: Features = None,
    db: Db = Path("runs.db"),
    run: Run = None,
    checkpoint: Checkpoint = None,
    output: Annotated[
        Output, option(OUTPUT, "csv (label,confidence,layer) or json lines.")
    ] = Output.csv,
    threads: Threads = 1,
    host: Host = None,
    max_line: MaxLine = MAX_LINE,
    columns: Columns = None,
    publish: Publish = None,
) -> None:
    """Write one prediction per input record on stdout, for the next program in a pipe.

    With --source tcp://HOST:PORT, answer each line clients send with a prediction instead; with
    --source mqtt://HOST:PORT/TOPIC --publish TOPIC, each message published to TOPIC."""
    guarded(
        _commands().predict,
        PredictOptions(
            _input(source, fmt, label_column, header, features),
            db, run, checkpoint, output, threads,
            ServeOptions(host, max_line=max_line, columns=_parsed(parse_columns, columns),
                         publish=publish),
        ),
    )  # fmt: skip


@app.command(cls=Command)
def runs(db: Db = Path("runs.db"), json_out: Json = False) -> None:
    """List the runs in a database: config, samples seen, latest metrics, checkpoints."""
    guarded(listing.list_runs, db, json_out)


checkpoints_app = typer.Typer(
    cls=App, help="List checkpoints, or verify them (checkpoints verify).",
    rich_markup_mode="markdown",
)  # fmt: skip
app.add_typer(checkpoints_app, name="checkpoints")
app.add_typer(fleet.app, name="fleet")  # cli/fleet.py: flwr only when a fleet command runs
OnlyRun = Annotated[str | None, option(CHECKPOINTS, "Only this run's checkpoints.")]


@checkpoints_app.callback(invoke_without_command=True)
def checkpoints(
    ctx: typer.Context, db: Db = Path("runs.db"), run: OnlyRun = None, json_out: Json = False
) -> None:
    """List checkpoints: run, samples, source position, time and size."""
    if ctx.invoked_subcommand is None:
        guarded(listing.list_checkpoints, db, run, json_out)


@checkpoints_app.command("verify", cls=Command)
def checkpoints_verify(db: Db = Path("runs.db"), run: OnlyRun = None) -> None:
    """Check the file (SQLite integrity) and every checkpoint's checksums; exit 1 if damaged."""
    guarded(listing.verify, db, run)


class Axis(enum.StrEnum):
    """The x axis of a learning curve."""

    auto = "auto"
    linear = "linear"
    log = "log"


@app.command(cls=Command)
def plot(
    db: Db = Path("runs.db"),
    run: Run = None,
    output: Annotated[Path, option(OUTPUT, "PNG file to write.", "--output", "-o")] = Path(
        "curve.png"
    ),
    x: Annotated[
        Axis, option(OUTPUT, "x axis: linear, log, or auto (log when it spans 100x).", "--x")
    ] = Axis.auto,
    start: Annotated[int | None, option(OUTPUT, "From sample N.", min=0)] = None,
    end: Annotated[int | None, option(OUTPUT, "Up to sample N.", min=1)] = None,
    layers: Annotated[
        str | None, option(OUTPUT, "Layers to draw, like 0,1 (default: all; none: no layer).")
    ] = None,
    classes: Annotated[
        int, option(OUTPUT, "Per-class curves: the N lowest at the end (0: no panel).", min=0)
    ] = 10,
) -> None:
    """Draw a run's learning curve (cumulative and rolling accuracy per layer, drifts) as PNG."""
    view = CurveView(x.value, start, end, _parsed(parse_layers, layers), classes)
    guarded(listing.plot, db, run, output, view)


@app.command(cls=Command)
def send(
    path: Annotated[
        str, typer.Argument(help="Lines to send (CSV or JSON lines; .gz too), or - for stdin.")
    ] = "-",
    to: Annotated[
        str, typer.Option("--to", help="The service, tcp://HOST:PORT.")
    ] = "tcp://127.0.0.1:9099",
    window: Annotated[
        int, typer.Option(help="Lines in flight before waiting for a reply.", min=1)
    ] = WINDOW,
) -> None:
    """Stream lines to a running service; print its replies (one JSON object per line) in order."""
    from . import serve

    guarded(serve.send, to, path, window)


SIGNAL_EXITS = (128 + signal.SIGINT, 128 + signal.SIGTERM)


def main() -> None:
    """Console-script entry point."""
    try:
        app(prog_name="spela-stream")
    except SystemExit as done:
        if done.code in SIGNAL_EXITS:
            _leave_now(int(done.code))
        raise


def _leave_now(code: int) -> NoReturn:
    """A signal asked to stop, and the command has saved and closed what it had: leave at once.
    The interpreter's own teardown (collecting torch's objects) took 0.7-2 s more on a loaded
    machine (tests/test_signal_latency.py), time that a service manager's stop waits for."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or broken pipe: nothing more to say
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
