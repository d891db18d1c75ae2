"""Byte streams for the text readers: files, gzip (by magic bytes) and stdin, read line by line.

Nothing here waits for more than the lines a reader asks to peek at, so stdin yields each
record as soon as its line arrives. ``Lines.batches`` hands over lines in the groups one read
brings (``read1``: a file in blocks of ``CHUNK`` bytes, a pipe what has arrived), so a reader can
parse many lines at once without ever waiting for a line that has not come.
"""

from __future__ import annotations

import abc
import gzip
import io
import zlib
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import SourceError
from .base import BadRecordError, OnError, RecordProblem, Sample, Source

GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"
_READ_ERRORS = (OSError, EOFError, zlib.error, ValueError)  # gzip: BadGzipFile, EOFError, zlib
CHUNK = 1 << 16  # bytes asked of one read by ``Lines.batches``


class _Prefixed(io.RawIOBase):
    """A raw stream that first replays ``head`` then reads ``rest`` (for streams without peek)."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        super().__init__()
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        read1 = getattr(self._rest, "read1", None)
        data = read1(len(buffer)) if read1 is not None else self._rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def peek_head(stream: BinaryIO, name: str, n: int = 8) -> tuple[bytes, BinaryIO]:
    """The first bytes of ``stream`` (up to ``n``, fewer if that is all that arrived) and a
    stream that still starts at byte 0."""
    try:
        peek = getattr(stream, "peek", None)
        if peek is not None:
            return bytes(peek(n))[:n], stream
        head = stream.read(n)
    except _READ_ERRORS as exc:
        raise SourceError(f"{name}: cannot read: {exc}") from None
    return head, io.BufferedReader(_Prefixed(head, stream))


def open_binary(path: Path, name: str) -> BinaryIO:
    """Open a file for reading bytes, or raise SourceError naming it and the fix."""
    if not path.exists():
        raise SourceError(f"{name}: no such file (check the path)")
    if path.is_dir():
        raise SourceError(f"{name}: is a directory, not a file (pass a file inside it)")
    try:
        return open(path, "rb")  # the Source closes it
    except OSError as exc:
        raise SourceError(f"{name}: cannot open: {exc.strerror or exc}") from None


def maybe_gunzip(stream: BinaryIO, name: str) -> BinaryIO:
    """Wrap ``stream`` in a streaming gzip reader when it starts with the gzip magic bytes."""
    head, stream = peek_head(stream, name, 2)
    if head == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[return-value]
    return stream


def text_lines(stream: BinaryIO, name: str, owned: list[BinaryIO]) -> Lines:
    """Numbered lines of ``stream``, gunzipped when it is gzip; closes ``owned`` on failure."""
    try:
        unzipped = maybe_gunzip(stream, name)
    except SourceError:
        Lines(stream, name, owned=owned).close()
        raise
    if unzipped is not stream:
        owned.append(unzipped)
    return Lines(unzipped, name, owned=owned)


class Lines:
    """Physical lines of a byte stream, numbered from 1, without their newline; can peek."""

    def __init__(self, stream: BinaryIO, name: str, *, owned: list[BinaryIO]) -> None:
        self.stream = stream
        self.name = name
        self._owned = owned  # handles to close; stdin is never among them
        self._ahead: deque[tuple[int, bytes]] = deque()
        self._count = 0

    def _read(self) -> tuple[int, bytes] | None:
        try:
            raw = self.stream.readline()
        except _READ_ERRORS as exc:
            raise SourceError(f"{self.name}: cannot read after line {self._count}: {exc}") from None
        if not raw:
            return None
        self._count += 1
        if self._count == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        return self._count, raw.rstrip(b"\r\n")

    def peek(self, k: int) -> tuple[int, bytes] | None:
        """The ``k``-th line not yet consumed (0-based), or None past the end."""
        while len(self._ahead) <= k:
            line = self._read()
            if line is None:
                return None
            self._ahead.append(line)
        return self._ahead[k]

    def drop_through(self, lineno: int) -> None:
        """Consume the peeked lines up to and including line ``lineno`` (a header)."""
        while self._ahead and self._ahead[0][0] <= lineno:
            self._ahead.popleft()

    def peek_content(self, k: int) -> tuple[int, bytes] | None:
        """The ``k``-th non-blank line not yet consumed (0-based), or None."""
        seen, i = 0, 0
        while (line := self.peek(i)) is not None:
            if not is_blank(line[1]):
                if seen == k:
                    return line
                seen += 1
            i += 1
        return None

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        while self._ahead:
            yield self._ahead.popleft()
        while (line := self._read()) is not None:
            yield line

    def batches(self) -> Iterator[list[tuple[int, bytes]]]:
        """The lines not yet consumed, as ``__iter__`` gives them, in lists: the peeked ones, then
        the complete lines of each read of up to ``CHUNK`` bytes. A read returns what has arrived
        (``read1``), so stdin hands over each line as soon as its newline is in."""
        if self._ahead:
            yield list(self._ahead)
            self._ahead.clear()
        read1 = getattr(self.stream, "read1", None)
        if read1 is None:  # a bare stream: a line at a time
            while (line := self._read()) is not None:
                yield [line]
            return
        pending: list[bytes] = []  # the start of a line whose newline has not arrived
        while True:
            try:
                data = read1(CHUNK)
            except _READ_ERRORS as exc:
                count = self._count
                raise SourceError(f"{self.name}: cannot read after line {count}: {exc}") from None
            if not data:
                break
            if b"\n" not in data:
                pending.append(data)
                continue
            parts = data.split(b"\n")
            cr = b"\r" in data
            if pending:
                pending.append(parts[0])
                parts[0] = b"".join(pending)
                cr = cr or b"\r" in parts[0]
            tail = parts.pop()  # after the last newline: b"" or the start of the next line
            pending = [tail] if tail else []
            yield self._numbered(parts, cr)
        if pending:
            yield self._numbered([b"".join(pending)], True)

    def _numbered(self, parts: list[bytes], returns: bool) -> list[tuple[int, bytes]]:
        """One read's lines, numbered on from the count, without a trailing CR (or line 1's BOM)."""
        start = self._count
        if start == 0 and parts[0].startswith(_BOM):
            parts[0] = parts[0][len(_BOM) :]
        self._count += len(parts)
        if returns:
            return [(start + i, p.rstrip(b"\r")) for i, p in enumerate(parts, 1)]
        return list(enumerate(parts, start + 1))

    def close(self) -> None:
        """Close the handles this reader opened."""
        for handle in reversed(self._owned):
            try:
                handle.close()
            except _READ_ERRORS:  # a truncated gzip may complain on close; nothing to save
                pass
        self._owned.clear()


def is_blank(raw: bytes) -> bool:
    """True for an empty or all-whitespace line (skipped, but counted for line numbers)."""
    return not raw or raw.isspace()


def decode(raw: bytes) -> str | None:
    """The line as text, or None when it is not UTF-8."""
    if raw.isascii():
        return raw.decode("ascii")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def decode_lossy(raw: bytes) -> str:
    """Text for an error's ``raw`` attribute, even when the bytes are not UTF-8."""
    return raw.decode("utf-8", "replace")


def not_utf8(raw: bytes) -> str:
    """The problem text for a line that is not UTF-8."""
    bad = raw.decode("utf-8", "replace")
    return f"not UTF-8 text ({bad[:40]!r}); re-encode the file as UTF-8"


class LineSource(Source):
    """A Source over numbered lines; subclasses parse one record line at a time."""

    def __init__(self, lines: Lines, fmt: str, *, skip: int, on_error: OnError | None) -> None:
        super().__init__(lines.name, fmt, skip=skip, on_error=on_error)
        self.lines = lines

    def _is_record(self, raw: bytes) -> bool:
        """Whether a line holds a record (blank lines never do; formats add comments)."""
        return not is_blank(raw)

    def _records(self) -> Iterator[tuple[int, str, bytes]]:
        """(index, where, raw line) of each record line, the first ``skip`` passed unparsed."""
        index = 0
        for lineno, raw in self.lines:
            if not self._is_record(raw):
                continue
            if index >= self._skip:
                yield index, f"{self.name} line {lineno}", raw
            index += 1

    def _record_batches(self) -> Iterator[list[tuple[int, str, bytes]]]:
        """``_records`` in the groups ``Lines.batches`` reads (none empty)."""
        index, skip, name, is_record = 0, self._skip, self.name, self._is_record
        for batch in self.lines.batches():
            out = []
            for lineno, raw in batch:
                if not is_record(raw):
                    continue
                if index >= skip:
                    out.append((index, f"{name} line {lineno}", raw))
                index += 1
            if out:
                yield out

    def close(self) -> None:
        """Close the file (stdin stays open)."""
        self.lines.close()


class TextLineSource(LineSource):
    """A LineSource whose records are UTF-8 text, each parsed by ``_parse`` (which raises
    ``RecordProblem`` for a bad one)."""

    def _items(self) -> Iterator[Sample | BadRecordError]:
        for index, where, raw in self._records():
            text = decode(raw)
            if text is None:
                yield BadRecordError(where, not_utf8(raw), index=index, raw=decode_lossy(raw))
                continue
            try:
                yield self._parse(text, index, where)
            except RecordProblem as bad:
                yield BadRecordError(where, str(bad), index=index, raw=text)

    @abc.abstractmethod
    def _parse(self, text: str, index: int, where: str) -> Sample:
        """One record line as a Sample; ``RecordProblem`` says what is wrong with a bad one."""
