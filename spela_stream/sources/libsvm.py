"""LIBSVM / SVMlight: ``label index:value index:value ...`` with 1-based sparse indices.

Indices may come in any order; absent ones are 0. ``# comments`` are ignored, as is ``qid:N``.
The width is ``n_features`` when given, else the largest index found by a first pass over the
file (stdin cannot be read twice, so it needs ``n_features``).
"""

from __future__ import annotations

import re

import numpy as np

from ..errors import SourceError
from .base import OnError, RecordProblem, Sample, label_token, value_problem
from .numparse import number
from .textio import Lines, TextLineSource

_INDEX = re.compile(r"[0-9]+")


def _content(raw: bytes) -> bytes:
    """The line without its comment."""
    cut = raw.find(b"#")
    return raw if cut < 0 else raw[:cut]


def max_index(lines: Lines) -> int:
    """The largest feature index in a LIBSVM stream (a first pass; bad tokens are ignored)."""
    top = 0
    for _, raw in lines:
        for token in _content(raw).split()[1:]:
            key, sep, _ = token.partition(b":")
            if sep and key.isdigit() and len(key) < 19:
                top = max(top, int(key))
    return top


def is_libsvm_line(text: str) -> bool:
    """Sniffing: a label, then at least one token, all of them ``index:value``."""
    tokens = text.split("#", 1)[0].split()
    return len(tokens) >= 2 and all(
        ":" in t and not t.startswith(":") and not t.endswith(":") for t in tokens[1:]
    )


class LibsvmSource(TextLineSource):
    """Records of a LIBSVM stream as dense vectors of ``n_features`` values."""

    def __init__(self, lines: Lines, *, n_features: int, skip: int, on_error: OnError | None):
        super().__init__(lines, "libsvm", skip=skip, on_error=on_error)
        if n_features < 1:
            raise SourceError(
                f"{self.name}: no feature index found, so the width is unknown "
                "(pass `n_features`, or check that the lines read 'label index:value ...')"
            )
        self.width = n_features

    def _is_record(self, raw: bytes) -> bool:
        return bool(_content(raw).strip())

    def _parse(self, text: str, index: int, where: str) -> Sample:
        tokens = text.split("#", 1)[0].split()
        if not tokens:
            raise RecordProblem("no label; a LIBSVM line reads 'label index:value ...'")
        label = tokens[0]
        if ":" in label:
            raise RecordProblem(
                f"first token {label[:40]!r} looks like index:value; a LIBSVM line starts with "
                "its label"
            )
        vec = np.zeros(self.width, dtype=np.float64)
        seen: set[int] = set()
        for token in tokens[1:]:
            key, sep, value = token.partition(":")
            if not sep:
                raise RecordProblem(f"token {token[:40]!r} is not index:value")
            if key == "qid":
                continue
            if not _INDEX.fullmatch(key) or len(key) > 18:
                raise RecordProblem(f"index {key[:40]!r} in {token[:40]!r} is not a number")
            k = int(key)
            if k == 0:
                raise RecordProblem("index 0; LIBSVM indices start at 1")
            if k > self.width:
                raise RecordProblem(
                    f"index {k} is beyond the width {self.width} (pass a larger `n_features`)"
                )
            if k in seen:
                raise RecordProblem(f"index {k} appears twice")
            seen.add(k)
            try:
                vec[k - 1] = number(value)
            except ValueError:
                raise RecordProblem(f"value {value[:40]!r} of index {k} is not a number") from None
        problem = value_problem(vec, lambda i: f"index {i + 1}")
        if problem is not None:
            raise RecordProblem(problem)
        return Sample(vec.astype(np.float32), label_token(label), index, where)
