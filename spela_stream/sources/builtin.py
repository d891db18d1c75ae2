"""Streams shipped inside the package, opened as ``builtin:NAME``."""

from __future__ import annotations

from ..datasets import load_mnist
from ..errors import SourceError
from .arrays import RowsSource
from .base import OnError

BUILTINS = ("mnist",)


def open_builtin(spec: str, *, skip: int, on_error: OnError | None) -> RowsSource:
    """``builtin:mnist``: the 10,000 MNIST test digits (784 pixels in 0..255, int labels)."""
    kind = spec.removeprefix("builtin:")
    if kind != "mnist":
        choices = ", ".join(f"builtin:{b}" for b in BUILTINS)
        raise SourceError(f"{spec}: unknown builtin stream (choose from {choices})")
    X, y = load_mnist()
    return RowsSource(spec, "builtin", X, labels=y, unit="record", skip=skip, on_error=on_error)
