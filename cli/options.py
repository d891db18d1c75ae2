"""Parsed options and the error mapping of the command line: light to import, so that
``--help``, ``runs`` and ``checkpoints`` answer without loading torch.

Errors: a ``SpelaError`` prints ``Error: ...`` and exits 1; a ``ConfigError`` from option values
exits 2; ``Interrupted`` (SIGINT/SIGTERM) exits 128 + the signal, after learn's checkpoint.
"""

from __future__ import annotations

import enum
import io
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec

import typer

from spela_stream.errors import ConfigError, SpelaError
from spela_stream.sources import BadRecordError, Source, open_source
from spela_stream.sources.tcp import MAX_LINE, PENDING
from spela_stream.stopping import Interrupted

from .output import flagged

P = ParamSpec("P")


class OnError(enum.StrEnum):
    """What a bad record does to a run."""

    raise_ = "raise"
    skip = "skip"


class Output(enum.StrEnum):
    """Prediction output format."""

    csv = "csv"
    json = "json"


@dataclass(frozen=True)
class FrameOptions:
    """How ``camera...`` and ``images:DIR`` sources are read and labelled (``cli.camera``)."""

    backbone: str | None = None
    size: int | None = None
    label: str | None = None
    labels: Path | None = None
    label_port: int | None = None
    fps: float | None = None
    changes: bool = False

    def given(self) -> list[str]:
        """The options set, as their flags."""
        return [
            "--" + k.replace("_", "-")
            for k, v in vars(self).items()
            if v is not None and v is not False
        ]


@dataclass(frozen=True)
class Input:
    """Where samples come from and how to read them."""

    source: str
    fmt: str | None = None
    label_column: str | None = None
    header: bool | None = None
    features: int | None = None
    frames: FrameOptions | None = None  # camera and images sources only

    def open(
        self, skip: int = 0, on_error: Callable[[BadRecordError], None] | None = None
    ) -> Source:
        """Open the source (``open_source``), skipping ``skip`` records (a resumed run's
        position); eval and predict open theirs with ``storage.evaluation.open_scored``."""
        return open_source(self.source, fmt=self.fmt, label_column=self.label_column,
                           header=self.header, n_features=self.features, skip=skip,
                           on_error=on_error)  # fmt: skip


@dataclass(frozen=True)
class ServeOptions:
    """How a ``tcp://`` service listens and keeps samples for late labels (cli/serve.py)."""

    host: str | None = None
    pending: int = PENDING
    max_line: int = MAX_LINE
    columns: tuple[str, ...] | None = None  # the layout's names (with --features: its width)
    publish: str | None = None  # mqtt://: the topic replies go to


@dataclass
class LearnOptions:
    """Everything ``learn`` was asked to do."""

    input: Input
    db: Path
    run: str | None
    resume: bool
    model: dict[str, Any]
    checkpoint: int | None = None  # with resume: go on from this checkpoint, not the latest
    skip: int | None = None  # with resume: records to pass over (default: by source kind)
    every: int = 1000
    window: int = 1000
    limit: int | None = None
    checkpoint_every: int | None = None
    checkpoint_seconds: float | None = 60.0
    keep: int | None = 3
    on_error: OnError = OnError.raise_
    rejects: Path | None = None
    json_out: bool = False
    quiet: bool = False
    threads: int = 1
    serve: ServeOptions = field(default_factory=ServeOptions)


@dataclass(frozen=True)
class EvalOptions:
    """Everything ``eval`` was asked to do."""

    input: Input
    db: Path
    run: str | None
    checkpoint: int | None
    limit: int | None
    window: int
    json_out: bool
    threads: int


@dataclass(frozen=True)
class PredictOptions:
    """Everything ``predict`` was asked to do."""

    input: Input
    db: Path
    run: str | None
    checkpoint: int | None
    output: Output
    threads: int
    serve: ServeOptions = field(default_factory=ServeOptions)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``Error: message`` on stderr and return the Exit to raise."""
    typer.echo(f"Error: {message}", err=True)
    return typer.Exit(code)


def guarded(command: Callable[P, None], *args: P.args, **kwargs: P.kwargs) -> None:
    """Run a command body, mapping the library's errors to messages and exit codes."""
    try:
        command(*args, **kwargs)
    except ConfigError as exc:
        raise fail(f"Invalid value: {flagged(str(exc))}", 2) from None
    except SpelaError as exc:
        raise fail(flagged(str(exc))) from None
    except Interrupted as stop:  # nothing to save here (learn saves before it gets this far)
        raise typer.Exit(stop.exit_code) from None
    except BrokenPipeError:  # the reader of our stdout went away (`| head`): a normal end
        try:  # point stdout at /dev/null so the interpreter's final flush cannot fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, io.UnsupportedOperation):
            pass
        raise typer.Exit(0) from None
