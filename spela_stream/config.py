"""Option values given as text (a command line's, a config file's): parsed and checked here.

Each parser takes the text (``None``: not given) and returns the value the library takes, or
raises ``ConfigError`` naming the text and the form it should have. Light to import (no torch).
"""

from __future__ import annotations

from spela_stream.errors import ConfigError

__all__ = ["parse_columns", "parse_hidden", "parse_layers"]


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
