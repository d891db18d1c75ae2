"""What a run was asked to do (learn, eval, predict: ``LearnOptions`` and kin), and the option
values given as text (a command line's), parsed and checked.

Each parser takes the text (``None``: not given) and returns the value the library takes, or
raises ``ConfigError`` naming the text and the form it should have. Light to import (no torch).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spela_stream.errors import ConfigError
from spela_stream.sources import BadRecordError, Source, open_source
from spela_stream.sources.tcp import MAX_LINE, PENDING

__all__ = [
    "EvalOptions", "FrameOptions", "Input", "LearnOptions", "OnError", "Output",
    "PredictOptions", "ServeOptions", "parse_columns", "parse_hidden", "parse_layers",
]  # fmt: skip


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
    """How ``camera...`` and ``images:DIR`` sources are read and labelled (``sources.frames``)."""

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
    """How a ``tcp://`` service listens and keeps samples for late labels (``service``)."""

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


def parse_hidden(value: str | None) -> tuple[int, ...] | str | None:
    """Layer widths ``"1024,1024"`` as a tuple, or ``"auto"`` (the model picks by width).

    >>> parse_hidden("512, 256"), parse_hidden(" auto ")
    ((512, 256), 'auto')
    """
    if value is None:
        return None
    if value.strip() == "auto":
        return "auto"
    try:
        widths = tuple(int(part) for part in value.split(","))
    except ValueError:
        raise ConfigError(f"{value!r}: give layer widths like 1024,1024, or auto") from None
    if not widths or any(w < 1 for w in widths):
        raise ConfigError(f"{value!r}: widths must be positive integers")
    return widths


def parse_columns(value: str | None) -> tuple[str, ...] | None:
    """Distinct column names ``"a,b,c,label"`` (at least two) as a tuple.

    >>> parse_columns("a, b,label")
    ('a', 'b', 'label')
    """
    if value is None:
        return None
    names = tuple(name.strip() for name in value.split(","))
    if len(names) < 2 or not all(names) or len(set(names)) < len(names):
        raise ConfigError(f"{value!r}: give distinct column names like a,b,c,label")
    return names


def parse_layers(value: str | None) -> tuple[int, ...] | None:
    """Layer numbers ``"0,1"`` (from 0) as a tuple; ``"none"``: no layer, ``()``.

    >>> parse_layers("0,2"), parse_layers("none")
    ((0, 2), ())
    """
    if value is None:
        return None
    if value == "none":
        return ()
    try:
        found = tuple(int(part) for part in value.split(","))
    except ValueError:
        raise ConfigError(f"{value!r}: give layer numbers like 0,1, or none") from None
    if any(i < 0 for i in found):
        raise ConfigError(f"{value!r}: layers count from 0")
    return found
