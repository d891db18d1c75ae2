"""JSON lines: one object per line, either ``{"x": [...], "y": ...}`` or flat named features.

The first record fixes the layout. ``{"x": [1, 2], "y": "cat", "id": 7}``: ``x`` is the vector,
``y`` the label, ``id`` an optional key for delayed labels. Flat ``{"f1": 1.0, "f2": 0, "y": 3}``:
every key but the label and ``id`` is a feature, in the first record's key order; the label key
is ``label_column`` if given, else the first of ``y``, ``label``, ``class`` the record has.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ..errors import SourceError
from ..inputs import Label
from .base import OnError, RecordProblem, Sample, value_problem
from .textio import Lines, TextLineSource, decode

LABEL_KEYS = ("y", "label", "class")
_EXAMPLE = '{"x": [0.5, 1.0], "y": "cat"}'


def load_object(text: str) -> dict[str, Any]:
    """One JSON-lines record as a dict; ``RecordProblem`` says what is wrong with a bad one."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordProblem(
            f"not valid JSON ({exc.msg} at column {exc.colno}); each line must be one JSON "
            f"object like {_EXAMPLE}"
        ) from None
    except (ValueError, RecursionError) as exc:  # int too long, nesting too deep
        raise RecordProblem(f"not usable JSON ({exc}); write plain numbers and strings") from None
    if not isinstance(obj, dict):
        raise RecordProblem(f"a JSON {type(obj).__name__}, expected an object like {_EXAMPLE}")
    return obj


def json_label(value: Any) -> Label | None:
    """A JSON label: null -> None, bool, int, str; an integral float -> int."""
    if value is None:
        return None
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise RecordProblem(
            f"label {value!r} is not a whole number; labels name classes, so write an int "
            "or a string"
        )
    raise RecordProblem(f"label is a JSON {type(value).__name__}; labels must be int, str or bool")


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        shown = json.dumps(value)[:40]
        raise RecordProblem(f"{what} is {shown}, not a number (features must be JSON numbers)")
    try:
        return float(value)
    except OverflowError:
        raise RecordProblem(f"{what} is too large for a float (rescale the feature)") from None


class JsonLinesSource(TextLineSource):
    """Records of a JSON-lines stream (see the module docstring for the two layouts)."""

    def __init__(
        self,
        lines: Lines,
        *,
        label_column: str | int | None,
        skip: int,
        on_error: OnError | None,
    ) -> None:
        super().__init__(lines, "jsonl", skip=skip, on_error=on_error)
        if label_column is not None and not isinstance(label_column, str):
            raise SourceError(
                f"{self.name}: `label_column` for JSON lines is a key name, not an index "
                f"({label_column!r}); the label key defaults to y, label or class"
            )
        self._label_column = label_column
        self._flat: bool | None = None  # unknown until a record parses
        self._label_key: str | None = None
        self._names: list[str] = []
        self._width: int | None = None
        first = lines.peek_content(0)
        text = decode(first[1]) if first is not None else None
        if text is None:
            return
        try:
            self._fix_layout(load_object(text))
        except RecordProblem:
            return  # the record is reported when it is read; a later one fixes the layout
        if self._flat:
            self.feature_names = list(self._names)

    def _fix_layout(self, obj: dict[str, Any]) -> None:
        """Take the layout (x-vector or flat keys, label key) from the first good record."""
        if isinstance(obj.get("x"), list):  # label_column does not apply: the label is "y"
            self._flat, self._label_key = False, "y"
            return
        if self._label_column is not None:
            if self._label_column not in obj:
                keys = ", ".join(repr(k) for k in list(obj)[:12])
                raise SourceError(
                    f"{self.name}: the first record has no key {self._label_column!r} for "
                    f"`label_column` (keys: {keys})"
                )
            self._label_key = self._label_column
        else:
            self._label_key = next((k for k in LABEL_KEYS if k in obj), None)
        self._flat = True
        self._names = [k for k in obj if k != self._label_key and k != "id"]
        if not self._names:
            raise RecordProblem(f"no feature keys besides the label; write records like {_EXAMPLE}")

    def _parse(self, text: str, index: int, where: str) -> Sample:
        return self.parse_object(load_object(text), index, where)

    def parse_object(self, obj: dict[str, Any], index: int, where: str) -> Sample:
        """A decoded record as a Sample (the first one fixes the layout); ``RecordProblem``
        says what is wrong with a bad one. The socket service parses its JSON lines here."""
        if self._flat is None:
            self._fix_layout(obj)
        if self._flat:
            vec = self._flat_vector(obj)
        else:
            xs = obj.get("x")
            if not isinstance(xs, list):
                raise RecordProblem(f'no "x" list; every record needs one, like {_EXAMPLE}')
            vec = np.array([_number(v, f"x[{i}]") for i, v in enumerate(xs)], dtype=np.float64)
            if self._width is None:
                self._width = len(xs)
            if len(xs) != self._width or not xs:
                raise RecordProblem(
                    f'"x" has {len(xs)} values, expected {self._width} (the first record\'s '
                    "length; every record needs the same width)"
                )
        problem = value_problem(vec, self._describe)
        if problem is not None:
            raise RecordProblem(problem)
        y = json_label(obj.get(self._label_key)) if self._label_key is not None else None
        raw_id = obj.get("id")
        return Sample(
            vec.astype(np.float32), y, index, where, None if raw_id is None else str(raw_id)
        )

    def _flat_vector(self, obj: dict[str, Any]) -> np.ndarray:
        names = self._names
        if len(obj) - (self._label_key in obj) - ("id" in obj) != len(names) or any(
            k not in obj for k in names
        ):
            known = {*names, self._label_key, "id"}
            missing = [k for k in names if k not in obj][:5]
            unknown = [k for k in obj if k not in known][:5]
            raise RecordProblem(
                f"keys differ from the first record's: missing {missing}, unknown {unknown} "
                "(every record needs the same feature keys)"
            )
        return np.array([_number(obj[k], f"feature {k!r}") for k in names], dtype=np.float64)

    def _describe(self, i: int) -> str:
        return f"feature {self._names[i]!r}" if self._flat else f"x[{i}]"
