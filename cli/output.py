"""The library's terminal formatting (``spela_stream.display``), with the library's parameter
names in messages given as the flags that set them."""

from __future__ import annotations

import re
from typing import Any

from spela_stream import display

__all__ = ["Progress", "flagged"]

# The library names its parameters in backticks (`n_features`); the CLI says which flag sets each.
FLAGS = {
    "n_features": "--features",
    "label_column": "--label-column",
    "fmt": "--format",
    "skip": "--skip",
    "fps": "--fps",
    "size": "--size",
    "backbone": "--backbone",
    "on_error": "--on-error",
    "rejects": "--rejects",
    "host": "--host",
    "publish": "--publish",
    "columns": "--columns",
    "label": "--label",
    "labels": "--labels",
    "label_port": "--label-port",
}


def flagged(message: str) -> str:
    """A library message with each parameter it names given as the flag that sets it.

    >>> flagged("x.svm: pass `n_features`; `other` stays")
    'x.svm: pass --features; other stays'
    """
    return re.sub(r"`(\w+)`", lambda m: FLAGS.get(m[1], m[1]), message)


class Progress(display.Progress):
    """The library's progress display, its news naming flags (``flagged``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(rewrite=flagged, **kwargs)
