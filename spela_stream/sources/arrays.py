"""Arrays on disk: ``.npy`` (label in a column), ``.npz`` (``X`` and ``y``) and IDX images.

``.npy`` is memory-mapped, so only the rows being read are in memory (a ``.npy.gz`` cannot be
mapped and is loaded whole). ``.npz`` members and IDX files are loaded whole when opened: numpy
cannot map a zip member, and ``read_idx`` reads a file at once. Pickled (object) arrays are
refused. ``where`` is ``"x.npy row 9"`` or ``"t10k-images-idx3-ubyte.gz record 9"``: the
0-based row, which equals the sample's index.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..datasets import read_idx
from ..errors import SourceError
from ..inputs import MAX_ABS, Label
from .base import (
    BadRecordError,
    OnError,
    RecordProblem,
    Sample,
    Source,
    as_features,
    resolve_column,
    value_problem,
)

_CHUNK = 1024  # rows converted to float64 at a time
NPZ_KEYS = (("X", "y"), ("x", "y"), ("data", "labels"), ("features", "labels"))
_LABEL_KINDS = "biufUS"


def array_label(value: Any) -> Label | None:
    """A label from an array element: bool, int, str; float -> int when whole, NaN -> None."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return str(value)
    v = float(value)
    if np.isnan(v):
        return None
    if v.is_integer():
        return int(v)
    raise RecordProblem(
        f"label {v!r} is not a whole number; labels name classes (save them as ints or strings)"
    )


class RowsSource(Source):
    """Rows of a 2-d (or image) array, labels from a column or from a separate 1-d array."""

    def __init__(
        self,
        name: str,
        fmt: str,
        X: np.ndarray,
        *,
        labels: np.ndarray | None = None,
        label_col: int | None = None,
        unit: str = "row",
        skip: int = 0,
        on_error: OnError | None = None,
    ) -> None:
        super().__init__(name, fmt, skip=skip, on_error=on_error)
        self._X = X  # (n, ...) possibly memory-mapped
        self._labels = labels  # (n,) or None
        self._label_col = label_col
        self._unit = unit

    def _describe(self, i: int) -> str:
        j = i if self._label_col is None or i < self._label_col else i + 1
        return f"column {j}" if self._label_col is not None else f"feature {i}"

    def _items(self) -> Iterator[Sample | BadRecordError]:
        n = self._X.shape[0]
        for start in range(self._skip, n, _CHUNK):
            stop = min(start + _CHUNK, n)
            block = np.asarray(self._X[start:stop]).reshape(stop - start, -1)
            labels: Any = None
            if self._label_col is not None:
                labels = block[:, self._label_col]
                block = np.delete(block, self._label_col, axis=1)
            elif self._labels is not None:
                labels = self._labels[start:stop]
            feats = block.astype(np.float64)  # (rows, d)
            ok = np.asarray((np.abs(feats) <= MAX_ABS).all(axis=1))  # (rows,)
            for r in range(stop - start):
                i = start + r
                where = f"{self.name} {self._unit} {i}"
                try:
                    if not ok[r]:
                        raise RecordProblem(value_problem(feats[r], self._describe) or "bad value")
                    y = None if labels is None else array_label(labels[r])
                except RecordProblem as bad:
                    yield BadRecordError(where, str(bad), index=i, raw=None)
                    continue
                yield Sample(as_features(feats[r]), y, i, where)

    def close(self) -> None:
        """Drop the array (and with it any memory map)."""
        self._X = self._X[:0]
        self._labels = None


def _load(path: Path, name: str, *, mmap: bool) -> Any:
    """np.load without pickles; every failure becomes a SourceError naming the file."""
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                return np.load(fh, allow_pickle=False)
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except Exception as exc:  # np.load raises many types (ValueError, OSError, zip errors...)
        raise SourceError(
            f"{name}: cannot read as NumPy data ({exc}); save numeric arrays with np.save or "
            "np.savez (pickled object arrays are never loaded)"
        ) from None


def _check_features(X: np.ndarray, name: str, what: str) -> None:
    if X.dtype.kind not in "biuf":
        raise SourceError(
            f"{name}: {what} has dtype {X.dtype}, not numbers (save the features as a numeric "
            "array)"
        )


def open_npy(
    path: Path, name: str, *, label_column: str | int | None, skip: int, on_error: OnError | None
) -> RowsSource:
    """A 2-d ``.npy``: each row a sample, the label in ``label_column`` (default last)."""
    X = _load(path, name, mmap=True)
    if not isinstance(X, np.ndarray):
        raise SourceError(f"{name}: holds several arrays; name it .npz")
    if X.ndim != 2:
        raise SourceError(
            f"{name}: a {X.ndim}-d array {X.shape}; save a 2-d array (rows are samples, one "
            "column the label) or an .npz with X and y"
        )
    _check_features(X, name, "the array")
    if X.shape[1] < 2:
        raise SourceError(f"{name}: 1 column, so no features beside the label")
    col = resolve_column(label_column, X.shape[1], None, name)
    return RowsSource(name, "npy", X, label_col=col, skip=skip, on_error=on_error)


def open_npz(path: Path, name: str, *, skip: int, on_error: OnError | None) -> RowsSource:
    """An ``.npz`` with features ``X`` (n, ...) and optional labels ``y`` (n,)."""
    archive = _load(path, name, mmap=False)
    if isinstance(archive, np.ndarray):
        raise SourceError(f"{name}: holds a single array; name it .npy")
    try:
        keys = list(archive.files)
        xkey, ykey = next(((x, y) for x, y in NPZ_KEYS if x in keys), (None, None))
        if xkey is None or ykey is None:
            raise SourceError(
                f"{name}: no feature array among {keys[:10]} (save it as X, with labels as y)"
            )
        X = archive[xkey]
        y = archive[ykey] if ykey in keys else None
    except SourceError:
        raise
    except Exception as exc:  # object arrays (pickles), corrupt members
        raise SourceError(
            f"{name}: cannot read its arrays ({exc}); save numeric X and int/str y (pickled "
            "object arrays are never loaded)"
        ) from None
    finally:
        archive.close()
    if X.ndim < 2:
        raise SourceError(f"{name}: {xkey} is {X.ndim}-d {X.shape}; it needs one row per sample")
    _check_features(X, name, xkey)
    if y is not None:
        if y.ndim != 1 or len(y) != len(X) or y.dtype.kind not in _LABEL_KINDS:
            raise SourceError(
                f"{name}: {ykey} has shape {y.shape} and dtype {y.dtype}; it must be a 1-d "
                f"array of {len(X)} ints, strings or bools"
            )
    return RowsSource(name, "npz", X, labels=y, skip=skip, on_error=on_error)


def labels_sibling(path: Path) -> Path | None:
    """The labels file next to an IDX images file (``images-idx3`` -> ``labels-idx1``)."""
    if "images-idx3" not in path.name:
        return None
    stem = path.name.replace("images-idx3", "labels-idx1")
    for candidate in (stem, stem.removesuffix(".gz"), stem + ".gz"):
        if (path.parent / candidate).is_file():
            return path.parent / candidate
    return None


def open_idx(path: Path, name: str, *, skip: int, on_error: OnError | None) -> RowsSource:
    """IDX images (any IDX of 2 or more dims), flattened; labels from the sibling file."""
    if not path.is_file():
        raise SourceError(f"{name}: no such file (check the path)")
    images = read_idx(path)
    if images.ndim < 2:
        raise SourceError(
            f"{name}: a 1-d IDX file holds labels, not features; pass the images file"
        )
    labels = None
    sibling = labels_sibling(path)
    if sibling is not None:
        labels = read_idx(sibling)
        if labels.shape != (len(images),):
            raise SourceError(
                f"{name}: {sibling.name} holds {labels.shape} labels for {len(images)} images "
                "(are they from the same split?)"
            )
    return RowsSource(
        name, "idx", images, labels=labels, unit="record", skip=skip, on_error=on_error
    )
