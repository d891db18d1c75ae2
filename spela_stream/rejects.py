"""Bad records a run passes over: counted in the loop, logged, kept in a replayable file.

A reader's bad record (``BadRecordError``) and a sample the model refuses (``InputError``: a
label of another kind, a width that does not fit) are both rejects: the loop counts them, the
first few are logged, and with a ``path`` their raw text is appended to it, in order, so the file
can be learned again once mended. Beside it ``FILE.where`` gets one JSON object per line of it:
where the record was, its line and field when known, and why it was refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from spela_stream.errors import InputError
from spela_stream.prequential import Prequential
from spela_stream.sources import BadRecordError, Sample

LOGGED = 10  # rejects logged one by one; the rest are only counted


def where_file(rejects: Path) -> Path:
    """The sidecar of a rejects file: ``bad.csv`` -> ``bad.csv.where``."""
    return rejects.with_name(rejects.name + ".where")


def rejection(err: BadRecordError) -> dict[str, Any]:
    """Where and why a record was refused: ``where``, ``line`` and ``field`` (1-based, or None
    when the reader does not say), ``record`` (0-based index in the source), ``reason``."""
    line = re.search(r"\bline (\d+)$", err.where)
    field = re.match(r"field (\d+)\b", err.problem)
    return {
        "where": err.where,
        "line": int(line[1]) if line else None,
        "field": int(field[1]) if field else None,
        "record": err.index,
        "reason": err.problem,
    }


class Rejects:
    """Count bad records in ``loop``, log the first ``LOGGED``, append their raw text to
    ``path`` (when given) and its ``.where`` sidecar. A context manager: leaving closes the files
    (they reopen, appending, on the next bad record)."""

    def __init__(
        self, loop: Prequential, path: Path | None, log: Callable[[str], None] | None = None
    ) -> None:
        self.loop = loop
        self.path = path
        self.log = log
        self._fh: TextIO | None = None
        self._why: TextIO | None = None

    def __call__(self, err: BadRecordError) -> None:
        self.loop.reject(err.index, err.where)
        if self.log is not None and self.loop.rejected <= LOGGED:
            self.log(f"skipped {err}")
        if self.path is not None and err.raw is not None:
            if self._fh is None or self._why is None:
                self._fh = self.path.open("a", encoding="utf-8")
                self._why = where_file(self.path).open("a", encoding="utf-8")
            self._fh.write(err.raw + "\n")
            self._why.write(json.dumps(rejection(err)) + "\n")
            self._fh.flush()  # a rejected line is data too: on disk before the run goes on
            self._why.flush()

    def refused(self, item: Any, exc: InputError) -> None:
        """A sample the model refused (``Prequential.run``'s ``on_error``): a reject as a
        reader's are; a delayed label or a bare ``(x, y)`` pair has no record to skip."""
        if not isinstance(item, Sample):
            raise exc
        problem = str(exc).removeprefix(f"{item.where}: ")
        self(BadRecordError(item.where, problem, index=item.index, raw=None))

    def close(self) -> None:
        """Close the files (nothing is lost: each line was flushed as it was written)."""
        for fh in (self._fh, self._why):
            if fh is not None:
                fh.close()
        self._fh = self._why = None

    def __enter__(self) -> Rejects:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
