"""One line at a time, as the socket service gets them: CSV/TSV or JSON lines, parsed by the very
readers that parse files and stdin (``DelimitedSource.parse``, ``JsonLinesSource.parse_object``).

A line starting with ``{`` is JSON, anything else CSV (TSV when the first such line has a tab).
As on stdin, the first CSV line fixes the width and may be a header (detected, or ``header``);
the first JSON record fixes its layout. Besides samples, JSON carries what a service needs:

- ``{"control": "checkpoint" | "metrics" | "shutdown"}``: a control line (``control`` is
  reserved: it is never a feature name);
- ``{"id": ..., "y": ...}`` (only an id and a label): the late label of a sample sent earlier
  with that ``id`` and no label.

>>> parser = LineParser()
>>> parser.parse(b"0.5,1.5,cat", 0, "client a line 1")
Sample(x=array([0.5, 1.5], dtype=float32), y='cat', index=0, where='client a line 1', id=None)
>>> parser.parse(b'{"id": 7, "y": "dog"}', 1, "client a line 2")
LateLabel(id='7', y='dog')
>>> print(parser.parse(b"0.5,oops,cat", 2, "client a line 3"))  # doctest: +ELLIPSIS
client a line 3: field 2 is 'oops', not a number (...)
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from ..errors import ConfigError, SourceError
from ..inputs import Label
from .base import BadRecordError, RecordProblem, Sample
from .delimited import DelimitedSource
from .jsonl import LABEL_KEYS, JsonLinesSource, json_label, load_object
from .layout import Layout
from .textio import Lines, decode, decode_lossy, is_blank, not_utf8

CONTROLS = ("checkpoint", "metrics", "shutdown")


@dataclass(frozen=True)
class Control:
    """A control line: ``{"control": NAME}``."""

    name: str


@dataclass(frozen=True)
class LateLabel:
    """A delayed label: ``{"id": ..., "y": ...}`` for a sample predicted earlier."""

    id: str
    y: Label


@dataclass(frozen=True)
class HeaderLine:
    """A CSV header (the first CSV line, or a repeat of it from another client)."""

    columns: int


Parsed = Sample | BadRecordError | Control | LateLabel | HeaderLine


def _lines(raw: bytes, name: str) -> Lines:
    """What the stdin readers take: a Lines over these bytes (one line, or none)."""
    return Lines(io.BytesIO(raw + b"\n" if raw else b""), name, owned=[])


class LineParser:
    """Turn single lines into Samples (or control lines, late labels, errors), statefully: the
    first CSV line and the first JSON record fix their formats' layouts, as on stdin."""

    def __init__(
        self,
        *,
        label_column: str | None = None,
        header: bool | None = None,
        n_features: int | None = None,
        layout: Layout | None = None,
    ) -> None:
        """``n_features``: a trained model's width, so CSV records that wide read as unlabelled.
        ``layout``: what every record must look like (``sources.layout``); a line that does not
        fit is an error and fixes nothing."""
        self.label_column = label_column
        self.header = header
        self.layout = layout
        self.n_features = layout.features if layout is not None else n_features
        self._csv: DelimitedSource | None = None
        self._other: DelimitedSource | None = None  # the labelled or unlabelled other width
        self._header: bytes | None = None
        json_label_column = label_column
        if layout is not None and layout.columns is not None:
            json_label_column = self._prime(layout.columns)
        self._json = JsonLinesSource(_lines(b"", "json"), label_column=json_label_column, skip=0,
                                     on_error=None)  # fmt: skip
        if layout is not None and layout.columns is not None and self._csv is not None:
            names = self._csv.feature_names or []
            label = {json_label_column: 0} if json_label_column is not None else {}
            self._json.parse_object({**dict.fromkeys(names, 0), **label}, -1, "the layout")
        self._label_keys = (label_column,) if label_column is not None else LABEL_KEYS
        self._json_label_keys = (json_label_column,) if json_label_column else self._label_keys

    def _prime(self, columns: tuple[str, ...]) -> str | None:
        """Fix the CSV layout from the given header's names; returns the label's name."""
        raw = ",".join(columns).encode()
        try:
            self._csv = DelimitedSource(_lines(raw, "the layout's columns"), "csv",
                                        label_column=self.label_column, header=True, skip=0,
                                        on_error=None, n_features=self.n_features)  # fmt: skip
        except SourceError as exc:
            raise ConfigError(str(exc)) from None
        self._header = raw
        names = self._csv.columns or []
        rest = [c for c in names if c not in (self._csv.feature_names or [])]
        return rest[0] if rest else None

    def parse(self, raw: bytes, index: int, where: str) -> Parsed:
        """One line (without its newline); ``index`` and ``where`` go into the Sample."""
        if is_blank(raw):  # the line server skips these; a caller that does not gets told
            return BadRecordError(where, "a blank line holds no record", index=index, raw="")
        if raw.lstrip()[:1] == b"{":
            return self._parse_json(raw, index, where)
        if self._csv is None:
            parsed = self._first_csv(raw, index, where)
        elif raw == self._header:
            return HeaderLine(self._csv.width)
        elif self.layout is not None and (n := self._csv.count_fields(raw)) not in (
            self.layout.width,
            self.layout.features,
        ):
            problem = f"{n} fields, expected {self.layout.width} ({self._fix()})"
            return BadRecordError(where, problem, index=index, raw=decode_lossy(raw))
        else:
            parsed = self._csv_for(raw).parse(index, where, raw)
        if self.layout is not None and isinstance(parsed, BadRecordError):
            describe = self.layout.describe()
            if describe not in parsed.problem:  # say which layout the line was read under
                problem = f"{parsed.problem}; {describe}"
                return BadRecordError(where, problem, index=index, raw=parsed.raw)
        return parsed

    def _fix(self) -> str:
        """What a line that does not fit should be, in words."""
        assert self.layout is not None
        return f"{self.layout.describe()}; send one record of that layout per line"

    def _misfit(self, obj: dict[str, object]) -> str | None:
        """Under a layout, what is wrong with a JSON record's width, before the JSON reader
        takes its layout from it (so a record that does not fit fixes nothing)."""
        if self.layout is None:
            return None
        xs = obj.get("x")
        if isinstance(xs, list):
            n, what = len(xs), '"x" values'
        else:
            n = sum(k != "id" and k not in self._json_label_keys for k in obj)
            what = "feature keys"
        if n == self.layout.features:
            return None
        return f"{n} {what}, expected {self.layout.features} ({self._fix()})"

    def _csv_for(self, raw: bytes) -> DelimitedSource:
        """The reader for a line's width: with the default label column, lines one field short
        of the first one's width are unlabelled (predict only), as predict reads them."""
        first = self._csv
        assert first is not None
        width = first.count_fields(raw)
        if width == first.width or self.label_column is not None:
            return first
        nfeat = first.n_features
        if width not in (nfeat, nfeat + 1):
            return first  # its error names the expected width
        other = self._other
        if other is None or other.width != width:
            try:
                other = self._other = DelimitedSource(
                    _lines(raw, "line"), first.format, label_column=None, header=False, skip=0,
                    on_error=None, n_features=nfeat,
                )  # fmt: skip
            except SourceError:  # a single field, say: the first reader's error says it
                return first
        return other

    def _first_csv(self, raw: bytes, index: int, where: str) -> Parsed:
        text = decode(raw)
        if text is None:
            return BadRecordError(where, not_utf8(raw), index=index, raw=decode_lossy(raw))
        fmt = "tsv" if "\t" in text else "csv"
        try:
            source = DelimitedSource(
                _lines(raw, where), fmt, label_column=self.label_column, header=self.header,
                skip=0, on_error=None, n_features=self.n_features,
            )  # fmt: skip
        except SourceError as exc:  # the layout is not fixed: the next CSV line tries again
            problem = str(exc).removeprefix(f"{where}: ")
            return BadRecordError(where, problem, index=index, raw=text)
        layout = self.layout
        if layout is not None and source.width not in (layout.width, layout.features):
            problem = f"{source.width} fields, expected {layout.width} ({self._fix()})"
            return BadRecordError(where, problem, index=index, raw=text)  # nothing fixed
        self._csv = source
        if source.columns is not None:
            self._header = raw
            return HeaderLine(source.width)
        return source.parse(index, where, raw)

    def _parse_json(self, raw: bytes, index: int, where: str) -> Parsed:
        text = decode(raw)
        if text is None:
            return BadRecordError(where, not_utf8(raw), index=index, raw=decode_lossy(raw))
        try:
            obj = load_object(text)
            if "control" in obj:
                return self._control(obj)
            if (
                "id" in obj
                and "x" not in obj
                and all(k == "id" or k in self._label_keys for k in obj)
            ):
                return self._late_label(obj)
            misfit = self._misfit(obj)
            if misfit is not None:
                return BadRecordError(where, misfit, index=index, raw=text)
            return self._json.parse_object(obj, index, where)
        except RecordProblem as bad:
            return BadRecordError(where, str(bad), index=index, raw=text)
        except SourceError as exc:  # the first record lacks the --label-column key
            problem = str(exc).split(": ", 1)[-1]
            return BadRecordError(where, problem, index=index, raw=text)

    def _control(self, obj: dict[str, object]) -> Control:
        name = obj["control"]
        if name not in CONTROLS or len(obj) != 1:
            choices = " | ".join(f'{{"control": "{c}"}}' for c in CONTROLS)
            raise RecordProblem(f"unknown control line {obj!r:.60}; send one of {choices}")
        assert isinstance(name, str)
        return Control(name)

    def _late_label(self, obj: dict[str, object]) -> LateLabel:
        y = next((obj[k] for k in self._label_keys if k in obj), None)
        label = json_label(y)
        if label is None or obj["id"] is None:
            key = self._label_keys[0]
            raise RecordProblem(
                f'a late label needs an id and a label, like {{"id": 17, "{key}": 3}}; '
                f"this line has {obj!r:.60}"
            )
        return LateLabel(str(obj["id"]), label)
