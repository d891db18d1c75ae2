"""The spela-stream command line: options -> library calls -> formatted output.

stdout carries only the command's product; progress and logs go to stderr. A ``SpelaError``
becomes ``Error: ...`` and exit 1, a bad option value exit 2, Ctrl-C a checkpoint and exit 130.
"""

from __future__ import annotations

import enum
import gc
from pathlib import Path
from types import ModuleType
from typing import Annotated

import typer

from spela_stream.policy import REPORTS
from spela_stream.sources import FORMATS
from spela_stream.sources.tcp import MAX_LINE, PENDING, WINDOW

from . import listing
from .options import (
    EvalOptions,
    FrameOptions,
    Input,
    LearnOptions,
    OnError,
    Output,
    PredictOptions,
    ServeOptions,
    guarded,
)

app = typer.Typer(
    help="Learn continuously from a stream, one sample at a time, with SPELA.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# ---------------------------------------------------------------- shared options

Source = Annotated[
    str,
    typer.Option(
        "--source",
        "-s",
        help="A file (csv, tsv, jsonl, arff, libsvm, npy, npz, idx; .gz too), '-' for stdin, "
        "builtin:mnist, camera:VIDEO or images:DIR (a camera run's own backbone).",
    ),
]
Db = Annotated[
    Path,
    typer.Option(help="SQLite file of runs and checkpoints.", envvar="SPELA_DB", dir_okay=False),
]
Run = Annotated[str | None, typer.Option(help="Run name (default: a new one, or the latest).")]
InputFormat = enum.StrEnum(  # type: ignore[misc]
    "InputFormat", {name: name for name in FORMATS if name != "builtin"}
)
Format = Annotated[
    InputFormat | None,
    typer.Option("--format", help="Input format, when the file name does not tell."),
]
LabelColumn = Annotated[
    str | None,
    typer.Option(
        help="Label column, by name or 0-based index (negative counts from the end); "
        "default the last. 'none': no label column."
    ),
]
Header = Annotated[
    bool | None, typer.Option("--header/--no-header", help="CSV/TSV header (default: detect).")
]
Features = Annotated[
    int | None,
    typer.Option(help="LIBSVM feature count (default: the file's largest index).", min=1),
]
Json = Annotated[bool, typer.Option("--json", help="One JSON object per line on stdout.")]
Threads = Annotated[
    int, typer.Option(help="Torch CPU threads (1 suits per-sample learning).", min=1)
]
Checkpoint = Annotated[int | None, typer.Option(help="Checkpoint id (default: the latest).")]

# ---------------------------------------------------------------- camera and images options

Backbone = Annotated[
    str | None,
    typer.Option(
        help="camera/images: frozen feature extractor, efficientnet-lite0 (ImageNet, 1280-d) or "
        "none (raw RGB pixels, --size px); default efficientnet-lite0, and a resumed run keeps its "
        "own.",
        show_default=False,
    ),
]
Size = Annotated[
    int | None,
    typer.Option(
        help="camera/images: frames resized to SIZE px square (default 112; with none 28).",
        min=1,
        show_default=False,
    ),
]
Label = Annotated[
    str | None,
    typer.Option(
        help="camera: teach every frame as this class (record one class per run; "
        "--resume adds the next). Without a label the run predicts."
    ),
]
Labels = Annotated[
    Path | None,
    typer.Option(
        help="camera: a label per frame of a video: a line per frame, or "
        "start,end,label ranges (0-based, end exclusive).",
        dir_okay=False,
    ),
]
LabelPort = Annotated[
    int | None,
    typer.Option(
        help="camera: listen on 127.0.0.1:PORT (0: any free port) for lines NAME "
        "(teach NAME from now on) and - (stop teaching).",
        min=0,
        max=65535,
    ),
]
Fps = Annotated[
    float | None,
    typer.Option(
        help="camera: take at most N frames a second. A video file is otherwise read "
        "at the learner's pace, every frame, deterministically; with --fps it plays in "
        "real time and frames the learner cannot keep up with are dropped (counted).",
        min=0.001,
    ),
]
Changes = Annotated[
    bool,
    typer.Option("--changes", help="camera: print a prediction only when it changes."),
]

# ---------------------------------------------------------------- serving over TCP (cli/serve.py)

Host = Annotated[
    str | None,
    typer.Option(
        help="With --source tcp://: the address to listen on (default: the URL's host, 127.0.0.1).",
        show_default=False,
    ),
]
Pending = Annotated[
    int,
    typer.Option(
        help="With tcp:// or mqtt://: unlabelled samples with an id kept for their late labels; "
        "beyond it the oldest are dropped (and counted).",
        min=1,
    ),
]
MaxLine = Annotated[
    int,
    typer.Option(
        help="With tcp:// or mqtt://: the longest line (message) taken, in bytes; a longer one "
        "gets an error reply.",
        min=16,
    ),
]

Publish = Annotated[
    str | None,
    typer.Option(
        help="With mqtt://: publish each message's reply (the prediction made before learning, "
        "as a JSON line) to this topic; {topic} stands for the message's own topic. A message "
        "with an MQTT 5 response topic is answered there.",
        show_default=False,
    ),
]


def _commands() -> ModuleType:
    """learn, eval and predict, with torch: loaded only when one of them runs."""
    from . import commands

    # The imports leave ~230k long-lived objects; without this a full collection (~120 ms) can
    # land inside a checkpoint or a sample. Freezing moves them out of the collector's sight.
    gc.freeze()
    return commands


@app.callback()
def _root() -> None:
    """Learn continuously from a stream, one sample at a time, with SPELA."""


def _parse_hidden(value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        widths = tuple(int(part) for part in value.split(","))
    except ValueError:
        raise typer.BadParameter(f"{value!r}: give layer widths like 1024,1024") from None
    if not widths or any(w < 1 for w in widths):
        raise typer.BadParameter(f"{value!r}: widths must be positive integers")
    return widths


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


@app.command()
def learn(
    source: Annotated[
        str,
        typer.Option(
            "--source",
            "-s",
            help="A file (csv, tsv, jsonl, arff, libsvm, npy, npz, idx; .gz too), '-' for stdin, "
            "builtin:mnist, camera (camera:N, camera:VIDEO, camera:URL), images:DIR, "
            "tcp://HOST:PORT to serve clients over a socket, or mqtt://HOST:PORT/TOPIC to learn "
            "what is published to TOPIC (+ and # wildcards; pip install 'spela-stream[mqtt]') "
            "(default: builtin:mnist, or a resumed run's own source).",
            show_default=False,
        ),
    ] = "",
    db: Db = Path("runs.db"),
    run: Run = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run from its latest checkpoint.")
    ] = False,
    checkpoint: Annotated[
        int | None,
        typer.Option(help="With --resume: go on from this checkpoint id (default: the latest)."),
    ] = None,
    skip: Annotated[
        int | None,
        typer.Option(
            help="With --resume: pass over N records of the source (default: a file the run "
            "was reading goes on after its last record; stdin, sockets and cameras skip none).",
            min=0,
        ),
    ] = None,
    hidden: Annotated[
        str | None, typer.Option(help="Layer widths (default: 1024,1024; camera and images: 1024).")
    ] = None,
    lr: Annotated[float | None, typer.Option(help="Local step size (default: 10).")] = None,
    report: Annotated[
        str | None, typer.Option(help=f"Reported layer: {', '.join(REPORTS)} (default: last).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of weights and class vectors.")] = None,
    memory: Annotated[
        int | None,
        typer.Option(
            help="Samples kept in the class-balanced replay memory that keeps old classes "
            "alive (default: 1000; 0 turns it off).",
            min=0,
        ),
    ] = None,
    every: Annotated[int, typer.Option(help="A progress row every N samples.", min=1)] = 1000,
    window: Annotated[int, typer.Option(help="Rolling accuracy window.", min=1)] = 1000,
    limit: Annotated[
        int | None, typer.Option(help="Stop when the run has seen N samples.", min=1)
    ] = None,
    checkpoint_every: Annotated[
        int | None, typer.Option(help="Checkpoint every N samples.", min=1)
    ] = None,
    checkpoint_seconds: Annotated[
        float, typer.Option(help="Checkpoint every S seconds (0: only at the end).", min=0)
    ] = 60.0,
    keep: Annotated[int, typer.Option(help="Checkpoints kept per run (0: all).", min=0)] = 3,
    on_error: Annotated[
        OnError, typer.Option(help="A bad record: stop (raise) or skip it.")
    ] = OnError.raise_,
    rejects: Annotated[
        Path | None, typer.Option(help="With --on-error skip: append bad lines to this file.")
    ] = None,
    fmt: Format = None,
    label_column: LabelColumn = None,
    header: Header = None,
    features: Features = None,
    json_out: Json = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
    threads: Threads = 1,
    backbone: Backbone = None,
    size: Size = None,
    label: Label = None,
    labels: Labels = None,
    label_port: LabelPort = None,
    fps: Fps = None,
    changes: Changes = False,
    host: Host = None,  # serving over TCP
    pending: Pending = PENDING,
    max_line: MaxLine = MAX_LINE,
    publish: Publish = None,
) -> None:
    """Learn a stream test-then-train, report prequential accuracy, checkpoint to SQLite.

    From a camera or images:DIR, frames pass through a frozen pre-trained image model and a SPELA
    head learns on its features; frames without a label are predicted (a JSON line each). With
    --source tcp://HOST:PORT it is a service: each line a client sends (CSV or JSON) is answered
    with the prediction made before learning from it. See README, Serving over TCP.
    """
    frames = FrameOptions(backbone, size, label, labels, label_port, fps, changes)
    opts = LearnOptions(
        input=_input(source, fmt, label_column, header, features, frames),
        db=db, run=run, resume=resume, checkpoint=checkpoint, skip=skip,
        model={"hidden": _parse_hidden(hidden), "lr": lr, "report": report, "seed": seed,
               "memory": memory},
        every=every, window=window, limit=limit,
        checkpoint_every=checkpoint_every, checkpoint_seconds=checkpoint_seconds or None,
        keep=keep or None, on_error=on_error, rejects=rejects,
        json_out=json_out, quiet=quiet, threads=threads,
        serve=ServeOptions(host, pending, max_line, publish),
    )  # fmt: skip
    guarded(_commands().learn, opts)


@app.command("eval")
def eval_(
    source: Source = "builtin:mnist",
    db: Db = Path("runs.db"),
    run: Run = None,
    checkpoint: Checkpoint = None,
    limit: Annotated[int | None, typer.Option(help="Score at most N samples.", min=1)] = None,
    window: Annotated[int, typer.Option(help="Rolling accuracy window.", min=1)] = 1000,
    fmt: Format = None,
    label_column: LabelColumn = None,
    header: Header = None,
    features: Features = None,
    json_out: Json = False,
    threads: Threads = 1,
    labels: Labels = None,
) -> None:
    """Score a saved model on a stream without learning: accuracy, kappa, recall, confusion."""
    guarded(
        _commands().evaluate,
        EvalOptions(
            _input(source, fmt, label_column, header, features, FrameOptions(labels=labels)),
            db, run, checkpoint, limit, window, json_out, threads,
        ),
    )  # fmt: skip


@app.command()
def predict(
    source: Source = "-",
    db: Db = Path("runs.db"),
    run: Run = None,
    checkpoint: Checkpoint = None,
    output: Annotated[
        Output, typer.Option(help="csv (label,confidence,layer) or json lines.")
    ] = Output.csv,
    fmt: Format = None,
    label_column: LabelColumn = None,
    header: Header = None,
    features: Features = None,
    threads: Threads = 1,
    host: Host = None,  # serving over TCP
    max_line: MaxLine = MAX_LINE,
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
            ServeOptions(host, max_line=max_line, publish=publish),
        ),
    )  # fmt: skip


@app.command()
def runs(db: Db = Path("runs.db"), json_out: Json = False) -> None:
    """List the runs in a database: config, samples seen, latest metrics, checkpoints."""
    guarded(listing.list_runs, db, json_out)


checkpoints_app = typer.Typer(help="List checkpoints, or verify them (checkpoints verify).")
app.add_typer(checkpoints_app, name="checkpoints")


@checkpoints_app.callback(invoke_without_command=True)
def checkpoints(
    ctx: typer.Context,
    db: Db = Path("runs.db"),
    run: Annotated[str | None, typer.Option(help="Only this run's checkpoints.")] = None,
    json_out: Json = False,
) -> None:
    """List checkpoints: run, samples, source position, time and size."""
    if ctx.invoked_subcommand is None:
        guarded(listing.list_checkpoints, db, run, json_out)


@checkpoints_app.command("verify")
def checkpoints_verify(
    db: Db = Path("runs.db"),
    run: Annotated[str | None, typer.Option(help="Only this run's checkpoints.")] = None,
) -> None:
    """Check the file (SQLite integrity) and every checkpoint's checksums; exit 1 if damaged."""
    guarded(listing.verify, db, run)


@app.command()
def plot(
    db: Db = Path("runs.db"),
    run: Run = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG file to write.")] = Path(
        "curve.png"
    ),
) -> None:
    """Draw a run's learning curve (cumulative and rolling accuracy per layer, drifts) as PNG."""
    guarded(listing.plot, db, run, output)


@app.command()
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


def main() -> None:
    """Console-script entry point."""
    app(prog_name="spela-stream")


if __name__ == "__main__":
    main()
