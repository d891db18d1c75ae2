"""CSV and TSV: one record per line, numeric features, the label in one column.

Fields are split on the delimiter; a line holding a double quote goes through the ``csv`` module
instead, so quoted fields (``"a,b"``, a quoted label) work at no cost to plain lines. A record
line never spans two physical lines (a quoted newline is not supported).

Speed: the lines one read brings (``Lines.batches``: a file's blocks, what a pipe has sent) are
parsed together when they are plain (digits, sign, point, exponent, spaces and the delimiter in
the features; a label without quotes): integers by one ``np.fromstring`` over the batch, other
numbers by one ``np.loadtxt`` (numpy's C parser, the very rounding of ``float``), one finiteness
check for the batch, labels from a small cache. A line that is not plain, or a batch the parsers
refuse, is parsed alone: plain integers by a whole-line numpy call, wide plain decimals likewise
(``numparse``), other numbers through ``float`` once the line is known to be plain ASCII without
underscores (``numparse.number``'s rule); only a line that fails all of these is re-read field by
field to say which field is wrong. Every path gives what ``float(field)`` gives, cast to float32.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator

import numpy as np

from ..errors import SourceError
from ..inputs import MAX_ABS, Label
from .base import (
    INT_LITERAL,
    BadRecordError,
    OnError,
    Sample,
    label_token,
    resolve_column,
    value_problem,
)
from .numparse import is_strict, number, plain_decimals, plain_ints
from .textio import Lines, LineSource, decode, decode_lossy, not_utf8

BATCH_MIN = 8  # lines parsed together at least; fewer (a pipe's lines as they come) one by one
DECIMALS_MIN = 64  # features from which a lone line of decimals is parsed by numpy, not float()
LABELS_CACHED = 4096  # distinct label texts remembered (a stream of unique labels stops there)
_PLAIN = b"0123456789+-.eE \n"  # the bytes of a plain batch's features, besides the delimiter


def split_fields(text: str, sep: str) -> list[str]:
    """The fields of one line; quoted fields (``"a,b"``) only when the line has a quote."""
    if '"' in text:
        try:
            return next(csv.reader([text], delimiter=sep), [""])
        except csv.Error:
            pass  # unbalanced quotes and the like: the plain split shows the user what is there
    return text.split(sep)


def _numeric(field: str) -> bool | None:
    """True if the field is a number, False if it is text, None if it is empty."""
    text = field.strip()
    if not text:
        return None
    try:
        number(text)
    except ValueError:
        return False
    return True


def detect_header(lines: Lines, sep: str, label: int | None = None) -> bool:
    """Is the first non-blank line a header? Yes when all its fields are text, or when some
    column is text there but a number in the next line (csv.Sniffer.has_header in spirit).

    A line whose only text is in the ``label`` column (0-based, negative from the end) is data:
    then stdin need not wait for a second line to hand out the first record.
    """
    first = lines.peek_content(0)
    text = decode(first[1]) if first is not None else None
    if text is None:
        return False
    kinds = [_numeric(f) for f in split_fields(text, sep)]
    if True not in kinds:
        return False in kinds
    if False not in kinds:
        return False  # all numbers: data
    if label is not None and -len(kinds) <= label < len(kinds):
        if [j for j, k in enumerate(kinds) if k is False] == [label % len(kinds)]:
            return False  # numbers and a text label: data
    second = lines.peek_content(1)
    text2 = decode(second[1]) if second is not None else None
    if text2 is None:
        return False
    kinds2 = [_numeric(f) for f in split_fields(text2, sep)]
    return any(k is False and k2 is True for k, k2 in zip(kinds, kinds2, strict=False))


class DelimitedSource(LineSource):
    """Records of a CSV or TSV stream; the header, if any, names the features."""

    def __init__(
        self,
        lines: Lines,
        fmt: str,
        *,
        label_column: str | int | None,
        header: bool | None,
        skip: int,
        on_error: OnError | None,
        n_features: int | None = None,
    ) -> None:
        """``n_features``, when known (a trained model's width), lets a record of exactly that
        many fields and no ``label_column`` be read as unlabelled (input to predict). A header
        with no record after it is no error here (a layout given up front, a service's first
        line); ``open_source`` refuses such a file or stdin."""
        super().__init__(lines, fmt, skip=skip, on_error=on_error)
        self._sep = "," if fmt == "csv" else "\t"
        self._sepb = self._sep.encode()
        first = lines.peek_content(0)
        if first is None:
            raise SourceError(f"{self.name}: no records (the input is empty)")
        if header is None:
            header = detect_header(lines, self._sep, _as_index(label_column))
        text = decode(first[1])
        fields = split_fields(text, self._sep) if text is not None else first[1].split(self._sepb)
        self.width = len(fields)  # fixed by the header, else by the first record
        self.columns: list[str] | None = None
        if header:
            self.columns = [column_name(str(f)) for f in fields]
            lines.drop_through(first[0])
        if self.width == 1:
            raise SourceError(
                f"{self.name}: the first line has 1 field, so no features beside the label (is the "
                f"delimiter right? {fmt} splits on {self._sep!r}; pass `fmt` to choose)"
            )
        unlabelled = (is_no_label(label_column) and "none" not in (self.columns or [])) or (
            label_column is None and n_features is not None and self.width == n_features
        )
        if unlabelled:  # every field is a feature; samples carry y=None (predict input)
            self._label = self.width
            self._nfeat = self.width
        else:
            self._label = resolve_column(label_column, self.width, self.columns, self.name)
            self._nfeat = self.width - 1
        self._last = self.width - 1
        if self.columns is not None:
            self.feature_names = [c for j, c in enumerate(self.columns) if j != self._label]
        self._plain = _PLAIN + self._sepb
        self._labels: dict[bytes, Label | None] = {}  # label text -> label (``label_token``)

    @property
    def n_features(self) -> int:
        """Features per record: the width, less the label column when there is one."""
        return self._nfeat

    def count_fields(self, raw: bytes) -> int:
        """The fields of a record line (a quoted field counts once)."""
        if b'"' in raw:
            return len(split_fields(raw.decode("utf-8", "replace"), self._sep))
        return raw.count(self._sepb) + 1

    def _items(self) -> Iterator[Sample | BadRecordError]:
        for batch in self._record_batches():
            if len(batch) < BATCH_MIN or self._label not in (0, self._last, self.width):
                for index, where, raw in batch:
                    yield self.parse(index, where, raw)
            else:
                yield from self.parse_many(batch)

    def parse_many(self, batch: list[tuple[int, str, bytes]]) -> list[Sample | BadRecordError]:
        """Record lines ``(index, where, raw)`` parsed together, as ``parse`` parses each."""
        sep, li, nfeat, labels = self._sepb, self._label, self._nfeat, self._labels
        feats: list[bytes] = []
        ys: list[Label | None] = []
        rows: list[int] = []  # the batch's lines that look plain, parsed together
        for k, (_, _, raw) in enumerate(batch):
            lab: bytes | None
            if li == self._last:
                feat, cut, lab = raw.rpartition(sep)
            elif li == 0:
                lab, cut, feat = raw.partition(sep)
            else:
                feat, cut, lab = raw, sep, None
            if not cut or not feat.strip() or feat.count(sep) != nfeat - 1:
                continue  # the width is wrong, or no value at all: ``parse`` says how
            y: Label | None = None
            if lab is not None:
                if lab in labels:
                    y = labels[lab]
                else:
                    text = decode(lab)
                    if text is None or '"' in text:
                        continue  # not UTF-8, or quoted: ``parse`` reads it
                    y = label_token(text)
                    if len(labels) < LABELS_CACHED:
                        labels[lab] = y
            feats.append(feat)
            ys.append(y)
            rows.append(k)
        out: list[Sample | BadRecordError | None] = [None] * len(batch)
        if feats:
            joined = b"\n".join(feats)
            if joined.translate(None, self._plain):  # some line is not plain: drop those
                keep = [j for j, f in enumerate(feats) if not f.translate(None, self._plain)]
                feats = [feats[j] for j in keep]
                ys, rows = [ys[j] for j in keep], [rows[j] for j in keep]
                joined = b"\n".join(feats)
            X = self._numbers(joined, len(feats)) if feats else None
            if X is not None:
                good = (np.abs(X) <= MAX_ABS).all(axis=1).tolist()  # False for NaN and infinity
                with np.errstate(over="ignore"):  # a row too large for float32 is not good
                    X32 = X.astype(np.float32)
                for k, x, y, ok in zip(rows, X32, ys, good, strict=True):
                    if ok:
                        index, where, _ = batch[k]
                        out[k] = Sample(x, y, index, where)
        return [item if item is not None else self.parse(*batch[k]) for k, item in enumerate(out)]

    def _numbers(self, joined: bytes, n: int) -> np.ndarray | None:
        """The (n, features) values of ``n`` plain lines joined by newlines (float32 when all are
        integers, else float64), or None when a field is not a number (the lines are then parsed
        one by one, to say which)."""
        sep = self._sepb
        flat = plain_ints(joined.replace(b"\n", sep), sep, n * self._nfeat)
        if flat is not None:
            return flat.reshape(n, self._nfeat)
        try:
            X = np.loadtxt(
                joined.decode("ascii").split("\n"), delimiter=self._sep, dtype=np.float64,
                comments=None, quotechar=None, ndmin=2,
            )  # fmt: skip
        except ValueError:
            return None
        # loadtxt skips blank lines: a row count that differs means one line per record is lost
        return X if X.shape == (n, self._nfeat) else None

    def parse(self, index: int, where: str, raw: bytes) -> Sample | BadRecordError:
        """One record line (without its newline) as a Sample, or the error saying what is wrong;
        the socket service parses its CSV lines here."""
        if not raw.isascii() and decode(raw) is None:
            return BadRecordError(where, not_utf8(raw), index=index, raw=decode_lossy(raw))
        sep, li = self._sepb, self._label
        lab: bytes | None
        if b'"' in raw:
            return self._parse_slowly(index, where, raw)
        if li == self.width:
            cut, feat, lab = 0, raw, None
        elif li == self._last:
            cut = raw.rfind(sep)
            feat, lab = raw[:cut], raw[cut + 1 :]
        elif li == 0:
            cut = raw.find(sep)
            feat, lab = raw[cut + 1 :], raw[:cut]
        else:
            parts = raw.split(sep)
            if len(parts) != self.width:
                return self._parse_slowly(index, where, raw)
            cut, lab = 0, parts.pop(li)
            feat = sep.join(parts)
        if cut < 0 or feat.count(sep) != self._nfeat - 1:
            return self._parse_slowly(index, where, raw)
        x = plain_ints(feat, sep, self._nfeat)
        if x is None and self._nfeat >= DECIMALS_MIN:  # narrower: numpy's calls cost more
            x = plain_decimals(feat, sep, self._nfeat)
        if x is None:
            if not is_strict(feat):  # 1_000, non-ASCII digits: the slow path names the field
                return self._parse_slowly(index, where, raw)
            try:
                vec = np.array([float(f) for f in feat.split(sep)], dtype=np.float64)
            except ValueError:
                return self._parse_slowly(index, where, raw)
            if value_problem(vec, self._describe) is not None:
                return self._parse_slowly(index, where, raw)
            x = vec.astype(np.float32)
        y = None if lab is None else label_token(lab.decode("utf-8"))
        return Sample(x, y, index, where)

    def _parse_slowly(self, index: int, where: str, raw: bytes) -> Sample | BadRecordError:
        """Parse field by field, to name the field that is wrong."""
        text = raw.decode("utf-8")
        fields = split_fields(text, self._sep)
        if len(fields) != self.width:
            count = f"{len(fields)} fields, expected {self.width} (is `label_column` right?)"
            return BadRecordError(where, count, index=index, raw=text)
        label = fields.pop(self._label) if self._label < self.width else None
        values: list[float] = []
        for i, field in enumerate(fields):
            try:
                values.append(number(field))
            except ValueError:
                return BadRecordError(where, self._not_number(i, field), index=index, raw=text)
        vec = np.array(values, dtype=np.float64)
        problem = value_problem(vec, self._describe)
        if problem is not None:
            return BadRecordError(where, problem, index=index, raw=text)
        y = None if label is None else label_token(label)
        return Sample(vec.astype(np.float32), y, index, where)

    def _describe(self, i: int) -> str:
        """Feature ``i`` as the user sees it: 'field 3' or "field 3 ('price')" (1-based)."""
        j = i if i < self._label else i + 1
        if self.columns is None:
            return f"field {j + 1}"
        return f"field {j + 1} ({self.columns[j]!r})"

    def _not_number(self, i: int, field: str) -> str:
        if not field.strip():
            return f"{self._describe(i)} is empty (fill in the missing value or drop the record)"
        j = i if i < self._label else i + 1
        column = self.columns[j] if self.columns is not None else j
        return (
            f"{self._describe(i)} is {field.strip()[:40]!r}, not a number (features must be "
            f"numeric; if this column is the label, pass `label_column` {column})"
        )


def is_no_label(label_column: str | int | None) -> bool:
    """``--label-column none``: the records carry no label (input to predict)."""
    return isinstance(label_column, str) and label_column.strip().lower() == "none"


def _as_index(label_column: str | int | None) -> int | None:
    """The label column as an index when it is one (None means the last column)."""
    if label_column is None:
        return -1
    if isinstance(label_column, int):
        return label_column
    text = label_column.strip()
    return int(text) if INT_LITERAL.fullmatch(text) and len(text) < 10 else None


def column_name(field: str) -> str:
    """A header field as a column name: stripped, without surrounding quotes."""
    name = field.strip()
    if len(name) >= 2 and name[0] == name[-1] and name[0] in "\"'":
        name = name[1:-1]
    return name
