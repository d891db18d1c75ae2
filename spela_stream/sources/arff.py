"""ARFF (Weka): a header of typed ``@attribute`` lines, then comma-separated ``@data`` rows.

Numeric attributes (``numeric``, ``real``, ``integer``) are features as they are. A nominal
attribute (``{a,b,c}``) that is not the label becomes the 0-based position of its value in the
declared list (``b`` -> 1.0). ``string`` and ``date`` attributes can only be the label. A ``?``
(missing value) in a feature makes the row a bad record; a ``?`` label makes it unlabelled.
Sparse rows (``{0 1.5, 3 2}``) are not supported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..errors import SourceError
from .base import (
    OnError,
    RecordProblem,
    Sample,
    label_token,
    resolve_column,
    value_problem,
)
from .numparse import number
from .textio import Lines, TextLineSource, decode, is_blank, not_utf8

# One value: a single- or double-quoted string (backslash escapes) or anything up to a comma.
_VALUE = re.compile(r"""\s*('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^,]*?)\s*(?:,|$)""")
_NUMERIC = ("numeric", "real", "integer")


@dataclass(frozen=True, slots=True)
class Attribute:
    """One ``@attribute``: its name, kind (numeric, nominal, string, date) and nominal values."""

    name: str
    kind: str
    values: tuple[str, ...] = ()


def unquote(token: str) -> str:
    """Strip whitespace and one level of ARFF quotes."""
    token = token.strip()
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "'\"":
        return re.sub(r"\\(.)", r"\1", token[1:-1])
    return token


def split_values(text: str) -> list[str]:
    """Split a data row or a nominal list on commas outside quotes (quotes are kept)."""
    if "'" not in text and '"' not in text:
        return text.split(",")
    values: list[str] = []
    pos = 0
    while pos <= len(text):
        match = _VALUE.match(text, pos)
        if match is None or match.end() == pos:  # an unclosed quote: the rest is one value
            values.append(text[pos:])
            break
        values.append(match.group(1))
        pos = match.end()
        if not text[match.end() - 1 : match.end()] == ",":
            break
    return values


def _attribute(rest: str, where: str) -> Attribute:
    rest = rest.strip()
    if rest[:1] in ("'", '"'):
        end = rest.find(rest[0], 1)
        while end > 0 and rest[end - 1] == "\\":
            end = rest.find(rest[0], end + 1)
        if end < 0:
            raise SourceError(f"{where}: unclosed quote in the attribute name")
        name, kind = unquote(rest[: end + 1]), rest[end + 1 :].strip()
    else:
        match = re.match(r"([^\s{]+)\s*(.*)$", rest)
        if match is None:
            raise SourceError(f"{where}: @attribute needs a name and a type")
        name, kind = match.group(1), match.group(2).strip()
    if kind.startswith("{"):
        if not kind.endswith("}"):
            raise SourceError(f"{where}: nominal type of {name!r} lacks its closing '}}'")
        return Attribute(name, "nominal", tuple(unquote(v) for v in split_values(kind[1:-1])))
    word = kind.split()[0].lower() if kind else ""
    if word in _NUMERIC:
        return Attribute(name, "numeric")
    if word in ("string", "date"):
        return Attribute(name, word)
    raise SourceError(
        f"{where}: attribute {name!r} has type {kind[:30]!r}; supported are numeric, real, "
        "integer, {nominal,values}, string and date"
    )


def read_header(lines: Lines) -> list[Attribute]:
    """Consume the header through ``@data``; return the attributes in order."""
    attributes: list[Attribute] = []
    for lineno, raw in lines:
        where = f"{lines.name} line {lineno}"
        text = decode(raw)
        if text is None:
            raise SourceError(f"{where}: {not_utf8(raw)}")
        stripped = text.strip()
        low = stripped.lower()
        if not stripped or stripped.startswith("%") or low.startswith("@relation"):
            continue
        if low.startswith("@attribute"):
            attributes.append(_attribute(stripped[len("@attribute") :], where))
        elif low.startswith("@data"):
            if not attributes:
                raise SourceError(f"{where}: @data before any @attribute (declare the columns)")
            return attributes
        else:
            raise SourceError(
                f"{where}: expected @relation, @attribute or @data in the ARFF header, got "
                f"{stripped[:40]!r} (is this an ARFF file? pass `fmt` otherwise)"
            )
    raise SourceError(f"{lines.name}: the ARFF header has no @data line (is the file cut short?)")


class ArffSource(TextLineSource):
    """Rows of an ARFF stream; the attribute names are the feature names."""

    def __init__(
        self,
        lines: Lines,
        *,
        label_column: str | int | None,
        skip: int,
        on_error: OnError | None,
    ) -> None:
        super().__init__(lines, "arff", skip=skip, on_error=on_error)
        self.attributes = read_header(lines)
        names = [a.name for a in self.attributes]
        self._label = resolve_column(label_column, len(names), names, self.name)
        self._features = [a for i, a in enumerate(self.attributes) if i != self._label]
        if not self._features:
            raise SourceError(f"{self.name}: only one attribute, so no features beside the label")
        for attr in self._features:
            if attr.kind not in ("numeric", "nominal"):
                raise SourceError(
                    f"{self.name}: attribute {attr.name!r} is {attr.kind}, which cannot be a "
                    "feature (drop it from the file, or make it the `label_column`)"
                )
        self._codes = [
            {v: float(k) for k, v in enumerate(a.values)} if a.kind == "nominal" else None
            for a in self._features
        ]
        label_attr = self.attributes[self._label]
        self._label_values = set(label_attr.values) if label_attr.kind == "nominal" else None
        self.feature_names = [a.name for a in self._features]

    def _is_record(self, raw: bytes) -> bool:
        return not is_blank(raw) and not raw.lstrip().startswith(b"%")

    def _parse(self, text: str, index: int, where: str) -> Sample:
        if text.lstrip().startswith("{"):
            raise RecordProblem(
                "sparse ARFF rows ({index value, ...}) are not supported; save the data dense"
            )
        values = split_values(text)
        if len(values) != len(self.attributes):
            raise RecordProblem(
                f"{len(values)} values, expected {len(self.attributes)} (one per @attribute)"
            )
        label = unquote(values.pop(self._label))
        vec = np.empty(len(values), dtype=np.float64)
        for i, (token, attr, codes) in enumerate(
            zip(values, self._features, self._codes, strict=True)
        ):
            value = unquote(token)
            if value == "?":
                raise RecordProblem(
                    f"missing value '?' in attribute {attr.name!r} (fill it in or drop the row)"
                )
            if codes is None:
                try:
                    vec[i] = number(value)
                except ValueError:
                    raise RecordProblem(
                        f"attribute {attr.name!r} is {value[:40]!r}, not a number"
                    ) from None
            elif value in codes:
                vec[i] = codes[value]
            else:
                raise RecordProblem(
                    f"attribute {attr.name!r} is {value[:40]!r}, not one of its declared "
                    f"values {{{','.join(attr.values)[:60]}}} (fix the row or the @attribute)"
                )
        problem = value_problem(vec, lambda i: f"attribute {self._features[i].name!r}")
        if problem is not None:
            raise RecordProblem(problem)
        if label == "?":
            return Sample(vec.astype(np.float32), None, index, where)
        if self._label_values is not None and label not in self._label_values:
            name = self.attributes[self._label].name
            raise RecordProblem(
                f"label {label[:40]!r} is not one of attribute {name!r}'s declared values "
                "(fix the row or the @attribute)"
            )
        return Sample(vec.astype(np.float32), label_token(label), index, where)
