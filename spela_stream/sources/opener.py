"""``open_source``: from a spec (path, ``-`` or ``builtin:NAME``) to the right reader.

The format comes from ``fmt``, else the file name (``.gz`` stripped), else magic bytes (npy, zip,
IDX, gzip), else the first line: ``{`` is JSON lines, ``@relation``/``%`` ARFF, ``label k:v ...``
LIBSVM, a tab TSV, anything else CSV.

Opening reads what detection needs, no more: a text source's first non-blank line (a second
only when a CSV header is in doubt), so ``open_source("-")`` returns once the first line has
arrived. Gzip on stdin is undone as it streams, in the decompressor's blocks.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import BinaryIO

from ..errors import SourceError
from .arff import ArffSource
from .arrays import open_idx, open_npy, open_npz
from .base import FORMATS, OnError, Source
from .builtin import open_builtin
from .delimited import DelimitedSource
from .jsonl import JsonLinesSource
from .libsvm import LibsvmSource, is_libsvm_line, max_index
from .textio import Lines, decode, open_binary, peek_head, text_lines

EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".arff": "arff",
    ".libsvm": "libsvm",
    ".svm": "libsvm",
    ".svmlight": "libsvm",
    ".npy": "npy",
    ".npz": "npz",
    ".idx": "idx",
}
BINARY = ("npy", "npz", "idx")
_IDX_TYPES = (0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E)


def format_from_name(filename: str) -> str | None:
    """The format a file name implies (``.gz`` stripped), or None."""
    low = filename.lower().removesuffix(".gz")
    if low.endswith("-ubyte") or low.endswith(".idx1-ubyte") or low.endswith(".idx3-ubyte"):
        return "idx"  # t10k-images-idx3-ubyte, train-images.idx3-ubyte
    dot = low.rfind(".")
    return EXTENSIONS.get(low[dot:]) if dot >= 0 else None


def format_from_magic(head: bytes) -> str | None:
    """The binary format some leading bytes announce, or None."""
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"PK\x03\x04"):
        return "npz"
    if len(head) >= 4 and head[:2] == b"\0\0" and head[2] in _IDX_TYPES and 1 <= head[3] <= 4:
        return "idx"
    return None


def sniff_line(text: str) -> str:
    """The text format a first non-blank line suggests."""
    stripped = text.strip()
    low = stripped.lower()
    if stripped.startswith("{"):
        return "jsonl"
    if low.startswith(("@relation", "@attribute", "%")):
        return "arff"
    if is_libsvm_line(stripped):
        return "libsvm"
    return "tsv" if "\t" in text else "csv"


def open_source(
    spec: str,
    *,
    fmt: str | None = None,
    label_column: str | int | None = None,
    header: bool | None = None,
    n_features: int | None = None,
    skip: int = 0,
    on_error: OnError | None = None,
    stdin: BinaryIO | None = None,
) -> Source:
    """Open a stream of Samples: a file path, ``"-"`` for stdin, or ``"builtin:mnist"``.

    >>> with open_source("builtin:mnist", skip=2) as stream:
    ...     first = next(iter(stream))
    >>> first.y, first.index, first.where, first.x.shape
    (1, 2, 'builtin:mnist record 2', (784,))
    """
    if fmt is not None and fmt not in FORMATS:
        raise SourceError(f"{spec}: unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    if skip < 0:
        raise SourceError(f"{spec}: skip must be 0 or more records, got {skip}")
    if n_features is not None and n_features < 1:
        raise SourceError(f"{spec}: n_features must be at least 1, got {n_features}")
    if spec.startswith("builtin:") or fmt == "builtin":
        if not spec.startswith("builtin:") or fmt not in (None, "builtin"):
            raise SourceError(
                f"{spec}: format 'builtin' goes only with builtin:NAME streams, which need no "
                "`fmt` (drop it)"
            )
        return open_builtin(spec, skip=skip, on_error=on_error)
    if spec == "-":
        if fmt in BINARY:
            raise SourceError(
                f"<stdin>: {fmt} data cannot be streamed from stdin (it needs a seekable "
                "file); pass the file path instead of -"
            )
        stream = stdin if stdin is not None else sys.stdin.buffer
        lines = text_lines(stream, "<stdin>", [])  # stdin is the process's: never closed
        return _open_text(lines, fmt, None, label_column, header, n_features, skip, on_error)
    if spec.startswith(("tcp://", "mqtt://")):  # learn and predict serve them before here
        what = "a socket" if spec.startswith("tcp://") else "an MQTT topic"
        raise SourceError(
            f"{spec}: {what} is served by learn and predict, not read as a stream "
            "here; give a file, - for stdin, or builtin:mnist (to score a service's model, save "
            "the lines its clients send to a file)"
        )
    path = Path(spec)
    kind = fmt or format_from_name(path.name)
    handle = None
    if kind not in BINARY:
        handle = open_binary(path, spec)
        try:
            head, _ = peek_head(handle, spec, 8)
        except SourceError:
            handle.close()
            raise
        if kind is None and (magic := format_from_magic(head)) is not None:
            handle.close()
            kind, handle = magic, None
    if handle is not None:
        lines = text_lines(handle, spec, [handle])
        return _open_text(lines, kind, path, label_column, header, n_features, skip, on_error)
    if not path.is_file():
        open_binary(path, spec).close()  # raises the "no such file" / "is a directory" error
    if kind == "npy":
        return open_npy(path, spec, label_column=label_column, skip=skip, on_error=on_error)
    if kind == "npz":
        return open_npz(path, spec, skip=skip, on_error=on_error)
    return open_idx(path, spec, skip=skip, on_error=on_error)


def _open_text(
    lines: Lines,
    kind: str | None,
    path: Path | None,
    label_column: str | int | None,
    header: bool | None,
    n_features: int | None,
    skip: int,
    on_error: OnError | None,
) -> Source:
    """A text reader over ``lines``, the format sniffed from the first line if ``kind`` is None."""
    name = lines.name
    try:
        first = lines.peek_content(0)
        if first is None:
            what = "no input arrived" if path is None else "the file is empty"
            raise SourceError(f"{name}: no records ({what}; give a stream with data)")
        if kind is None:
            text = decode(first[1])
            if text is None or "\0" in text:
                raise SourceError(
                    f"{name}: cannot tell the format, the first line is not text (pass `fmt`, "
                    "or name the file .csv, .jsonl, .arff, .libsvm, .npy, .npz or .idx)"
                )
            kind = sniff_line(text)
        if kind in BINARY:  # only reachable from gzip-wrapped binaries on stdin
            raise SourceError(f"{name}: {kind} data cannot be streamed; pass a file path")
        if kind in ("csv", "tsv"):
            src = DelimitedSource(
                lines, kind, label_column=label_column, header=header, skip=skip,
                on_error=on_error, n_features=n_features,
            )  # fmt: skip
            if src.columns is not None and lines.peek_content(0) is None:  # as an empty one is
                raise SourceError(
                    f"{name}: no records (only a header line; give a stream with data)"
                )
            return src
        if kind == "jsonl":
            return JsonLinesSource(lines, label_column=label_column, skip=skip, on_error=on_error)
        if kind == "arff":
            return ArffSource(lines, label_column=label_column, skip=skip, on_error=on_error)
        if n_features is None:
            n_features = _prescan(path, name)
        return LibsvmSource(lines, n_features=n_features, skip=skip, on_error=on_error)
    except BaseException:
        lines.close()
        raise


def _prescan(path: Path | None, name: str) -> int:
    """The width of a LIBSVM file: its largest index, found by a first pass."""
    if path is None:
        raise SourceError(
            f"{name}: LIBSVM from stdin needs its width up front (pass `n_features`); "
            "stdin cannot be read twice to find the largest index"
        )
    handle = open_binary(path, name)
    lines = text_lines(handle, name, [handle])
    try:
        return max_index(lines)
    finally:
        lines.close()
