"""What every reader shares: the Sample, the record error, the Source base and value checks.

A reader subclasses :class:`Source` and implements ``_items``, a generator of ``Sample`` or
``BadRecordError`` objects in stream order; the base class turns the errors into raises or
``on_error`` calls, so that policy lives in one place.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType

import numpy as np

from ..errors import SourceError
from ..inputs import MAX_ABS, Label

FORMATS = ("csv", "tsv", "jsonl", "arff", "libsvm", "npy", "npz", "idx", "builtin")

INT_LITERAL = re.compile(r"[+-]?[0-9]+")


@dataclass(frozen=True, slots=True)
class Sample:
    """One record of a stream: features, label (or None), and where it came from."""

    x: np.ndarray  # (d,) float32, finite, |v| <= MAX_ABS; d is fixed per source
    y: Label | None
    index: int  # records consumed before this one, bad ones included
    where: str  # "data.csv line 12"
    id: str | None = None


class BadRecordError(SourceError):
    """A malformed record; the message starts with ``where`` and says how to fix it."""

    def __init__(self, where: str, problem: str, *, index: int, raw: str | None) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem
        self.index = index
        self.raw = raw


OnError = Callable[[BadRecordError], None]


class RecordProblem(Exception):
    """Internal: what is wrong with the record being parsed; a reader turns it into a
    BadRecordError with the record's position."""


class Source(abc.ABC):
    """A stream of Samples read once, in order; use as an iterator and a context manager."""

    name: str
    format: str
    feature_names: list[str] | None

    def __init__(
        self, name: str, fmt: str, *, skip: int = 0, on_error: OnError | None = None
    ) -> None:
        self.name = name
        self.format = fmt
        self.feature_names = None
        self._skip = skip
        self._on_error = on_error
        self._started = False

    @abc.abstractmethod
    def _items(self) -> Iterator[Sample | BadRecordError]:
        """Every record in order: a Sample, or the BadRecordError saying what is wrong with it."""

    def __iter__(self) -> Iterator[Sample]:
        if self._started:
            raise SourceError(f"{self.name}: this source was already read; open it again")
        self._started = True
        return self._run()

    def _run(self) -> Iterator[Sample]:
        try:
            for item in self._items():
                if isinstance(item, BadRecordError):
                    if self._on_error is None:
                        raise item
                    self._on_error(item)
                    continue
                yield item
        finally:
            self.close()

    def close(self) -> None:  # noqa: B027 - a default: sources that hold nothing open keep it
        """Release the file (a no-op for stdin, which the process owns)."""

    def __enter__(self) -> Source:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} format={self.format}>"


def label_token(text: str) -> Label | None:
    """A text label: None when empty, int when an integer literal ("7", "-1", "+1"), else str."""
    token = text.strip()
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "\"'":
        token = token[1:-1]
    if not token:
        return None
    if INT_LITERAL.fullmatch(token):
        try:
            return int(token)
        except ValueError:  # more digits than int() accepts: keep the text
            return token
    return token


def resolve_column(
    label_column: str | int | None, width: int, names: list[str] | None, name: str
) -> int:
    """The 0-based label column for a row of ``width`` values (name, index, negative index)."""
    if label_column is None:
        return width - 1
    if isinstance(label_column, str):
        if names is not None and label_column in names:
            return names.index(label_column)
        if not INT_LITERAL.fullmatch(label_column.strip()):
            if names is None:
                raise SourceError(
                    f"{name}: `label_column` {label_column!r} is a column name, but {name} has "
                    "no header naming its columns; give a 0-based index instead (-1 = last)"
                )
            shown = ", ".join(repr(n) for n in names[:12]) + (", ..." if len(names) > 12 else "")
            raise SourceError(
                f"{name}: no column named {label_column!r} for `label_column` (columns: {shown})"
            )
        label_column = int(label_column)
    i = label_column + width if label_column < 0 else label_column
    if not 0 <= i < width:
        raise SourceError(
            f"{name}: `label_column` {label_column} is out of range for {width} columns "
            f"(use 0..{width - 1}, or -1 for the last)"
        )
    return i


def value_problem(vec: np.ndarray, describe: Callable[[int], str]) -> str | None:
    """Why a float64 feature vector cannot be used (NaN, infinity, too large), or None."""
    ok = np.abs(vec) <= MAX_ABS  # False for NaN and infinity too: one vectorised pass
    if ok.all():
        return None
    i = int(np.argmin(ok))
    v = float(vec[i])
    if np.isnan(v):
        return f"NaN in {describe(i)} (fill in or drop missing values before streaming)"
    if np.isinf(v):
        return f"infinity in {describe(i)} (fill in or drop such values before streaming)"
    return f"{describe(i)} is {v:g}, beyond {MAX_ABS:g} in magnitude (rescale the feature)"


def as_features(vec: np.ndarray) -> np.ndarray:
    """A checked float64 vector as the float32 (d,) array a Sample carries."""
    return np.ascontiguousarray(vec, dtype=np.float32)
