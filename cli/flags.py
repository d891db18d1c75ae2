"""The options the commands share, grouped into help panels; light to import (no torch).

Each option names its panel, so that ``learn --help`` reads as a few short groups. The help
texts stay short enough for an 80-column terminal; the README has the long story.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Any

import typer

from spela_stream.policy import REPORTS
from spela_stream.sources import FORMATS
from spela_stream.sources.tcp import MAX_LINE, PENDING

MODEL, INPUT, CHECKPOINTS, OUTPUT, CAMERA, SERVICE = (
    "Model", "Input", "Checkpoints", "Output", "Camera and images", "Service (tcp://, mqtt://)",
)  # fmt: skip


def option(panel: str, help: str, *decls: str, flag: bool = False, **kw: Any) -> Any:
    """A ``typer.Option`` in ``panel``; a flag shows no ``<bool>`` (it takes no value)."""
    if flag:
        kw["metavar"] = ""
    return typer.Option(*decls, help=help, rich_help_panel=panel, **kw)


# ---------------------------------------------------------------- input

SOURCE_HELP = (
    "A file (csv, tsv, jsonl, arff, libsvm, npy, npz, idx; .gz too), - for stdin, "
    "builtin:mnist, camera:VIDEO or images:DIR."
)
Source = Annotated[str, option(INPUT, SOURCE_HELP, "--source", "-s")]
InputFormat = enum.StrEnum(  # type: ignore[misc]
    "InputFormat", {name: name for name in FORMATS if name != "builtin"}
)
TEXT_FORMATS = ", ".join(f for f in FORMATS if f != "builtin")
Format = Annotated[
    InputFormat | None,
    option(INPUT, f"Input format ({TEXT_FORMATS}), when the name does not tell.", "--format",
           metavar="FORMAT"),
]  # fmt: skip
LabelColumn = Annotated[
    str | None,
    option(INPUT, "Label column: a name or 0-based index (default: the last; none: no label)."),
]
Header = Annotated[
    bool | None,
    option(INPUT, "CSV/TSV header (default: detect).", "--header/--no-header", flag=True),
]
Features = Annotated[
    int | None,
    option(INPUT, "LIBSVM width (default: the largest index); tcp://: the layout's.", min=1),
]

# ---------------------------------------------------------------- checkpoints and runs

Db = Annotated[
    Path,
    option(CHECKPOINTS, "SQLite file of runs and checkpoints.", envvar="SPELA_DB",
           dir_okay=False),
]  # fmt: skip
Run = Annotated[str | None, option(CHECKPOINTS, "The run (default: the latest).")]
Checkpoint = Annotated[int | None, option(CHECKPOINTS, "Checkpoint id (default: the latest).")]

# ---------------------------------------------------------------- output and the machine

Json = Annotated[bool, option(OUTPUT, "One JSON object per line on stdout.", "--json", flag=True)]
Threads = Annotated[int, option(MODEL, "Torch CPU threads (1 suits one sample at a time).", min=1)]

# ---------------------------------------------------------------- camera and images

Backbone = Annotated[
    str | None,
    option(CAMERA, "Frozen feature extractor: efficientnet-lite0 (default) or none (pixels).",
           show_default=False),
]  # fmt: skip
Size = Annotated[
    int | None,
    option(CAMERA, "Frames resized to SIZE px square (default 112; none: 28).", min=1,
           show_default=False),
]  # fmt: skip
Label = Annotated[
    str | None, option(CAMERA, "Teach every frame as this class (without one: predict).")
]
Labels = Annotated[
    Path | None,
    option(CAMERA, "A label per video frame: a line per frame, or start,end,label ranges.",
           dir_okay=False),
]  # fmt: skip
LabelPort = Annotated[
    int | None,
    option(CAMERA, "Listen on 127.0.0.1:PORT for lines NAME (teach NAME) and - (stop).",
           min=0, max=65535),
]  # fmt: skip
Fps = Annotated[
    float | None,
    option(CAMERA, "At most N frames a second, in real time (default: every frame).",
           min=0.001),
]  # fmt: skip
Changes = Annotated[
    bool, option(CAMERA, "Print a prediction only when it changes.", "--changes", flag=True)
]

# ---------------------------------------------------------------- serving over TCP

Host = Annotated[
    str | None,
    option(SERVICE, "The address to listen on (default: the URL's host).", show_default=False),
]
Pending = Annotated[
    int, option(SERVICE, "Unlabelled samples kept for late labels (then the oldest go).", min=1)
]
MaxLine = Annotated[int, option(SERVICE, "The longest line taken, in bytes.", min=16)]
Columns = Annotated[
    str | None,
    option(SERVICE, "The layout up front: header names a,b,c,label (or --features N). "
           "Default: the first 2 lines of one width.", show_default=False),
]  # fmt: skip
Publish = Annotated[
    str | None,
    option(SERVICE, "mqtt://: the topic replies go to.",
           show_default=False),
]  # fmt: skip

__all__ = ["MAX_LINE", "PENDING", "REPORTS"]
