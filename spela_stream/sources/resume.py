"""Where a resumed run goes on reading, by the kind of source it reads.

A file is recognised by a mark taken at each checkpoint: the byte offset just past the last
record read, a hash of the file's head and a hash of the bytes just before that offset. The same
file (grown or edited after the offset, but not before it) goes on after its last record; any
other file starts at its beginning. Stdin, sockets and live cameras carry new data each time:
nothing of them is skipped unless asked.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .textio import GZIP_MAGIC

SPAN = 4096  # bytes hashed at the head and just before the offset
_LINE = re.compile(r" line (\d+)$")


def file_of(spec: str) -> Path | None:
    """The file a source spec reads (a path, or a video behind ``camera:PATH``), else None."""
    if spec == "-" or spec.startswith(("tcp://", "mqtt://", "builtin:", "images:")):
        return None
    if spec.startswith("camera:"):
        spec = spec.removeprefix("camera:")
        if spec.isdigit():
            return None
    path = Path(spec)
    return path if path.is_file() else None


def carries_new_data(spec: str) -> bool:
    """True for stdin, sockets and live cameras: what they send next was never read before."""
    if spec == "-" or spec == "camera" or spec.startswith(("tcp://", "mqtt://")):
        return True
    if spec.startswith("camera:"):
        rest = spec.removeprefix("camera:")
        return rest.isdigit() or "://" in rest
    return False


def _open(path: Path) -> IO[bytes]:
    fh: IO[bytes] = path.open("rb")
    if fh.read(2) == GZIP_MAGIC:  # lines and offsets count the text, not the compressed bytes
        fh.close()
        return gzip.open(path, "rb")  # type: ignore[return-value]
    fh.seek(0)
    return fh


def _digest(fh: IO[bytes], start: int, end: int) -> str:
    fh.seek(start)
    return hashlib.sha256(fh.read(max(0, end - start))).hexdigest()


@dataclass
class FileMarker:
    """Marks a file at a position, remembering how far it scanned so each mark reads only the
    lines since the previous one."""

    path: Path
    _line: int = 0
    _offset: int = 0

    def mark(self, where: str) -> dict[str, Any] | None:
        """The mark of the file just past the record at ``where`` (``"x.csv line 31"``); for a
        reader without line numbers, the whole file. None if the file cannot be read."""
        try:
            with _open(self.path) as fh:
                found = _LINE.search(where)
                if found is None:
                    fh.seek(0, 2)
                    offset = fh.tell()
                else:
                    line = int(found[1])
                    if line < self._line:
                        self._line = self._offset = 0
                    fh.seek(self._offset)
                    while self._line < line:
                        raw = fh.readline()
                        if not raw:
                            break
                        self._line += 1
                        self._offset += len(raw)
                    offset = self._offset
                return {
                    "offset": offset,
                    "head": _digest(fh, 0, min(SPAN, offset)),
                    "before": _digest(fh, max(0, offset - SPAN), offset),
                }
        except (OSError, EOFError, ValueError):
            return None


def same_file(path: Path, mark: dict[str, Any]) -> bool:
    """True when ``path`` holds, up to the marked offset, the bytes the mark was taken on."""
    try:
        offset = int(mark["offset"])
        with _open(path) as fh:
            return (
                _digest(fh, 0, min(SPAN, offset)) == mark["head"]
                and _digest(fh, max(0, offset - SPAN), offset) == mark["before"]
                and fh.tell() == offset
            )
    except (OSError, EOFError, ValueError, KeyError, TypeError):
        return False


def resume_skip(
    spec: str, saved: str, position: int, mark: dict[str, Any] | None
) -> tuple[int, str | None]:
    """How many records of ``spec`` a run that read ``saved`` up to ``position`` passes over,
    and a note to tell the user (None when nothing needs saying)."""
    if position == 0:
        return 0, None
    if spec.startswith("tcp://"):
        return 0, f"{spec} is a service: its clients send new lines, so nothing is skipped"
    if carries_new_data(spec):
        return 0, (
            f"{spec} carries new data: learning all of it (the {position} records read before "
            "are not skipped; `skip` N passes over N records)"
        )
    path = file_of(spec)
    if path is None:  # builtin streams and image folders: the same spec reads the same records
        if spec == saved:
            return position, None
        return 0, f"{spec} is not {saved}: learning it from its beginning"
    if mark is None:  # a checkpoint from before marks were kept: trust the name
        if spec == saved:
            return position, None
        return 0, f"{spec} is not {saved}: learning it from its beginning"
    if same_file(path, mark):
        return position, None
    return 0, (
        f"{spec} is not the file the run read {position} records of (its bytes up to there "
        "differ): learning it from its beginning (`skip` N passes over N records)"
    )
