"""Loaders for the benchmark streams, in their published stream order.

Every loader returns ``(X, y)``: ``X`` is a float32 array of shape ``(n, d)`` and ``y`` a Python
list of labels (``int`` for digits, ``str`` for letters and for Elec2's ``"UP"``/``"DOWN"``).
Rows are never shuffled: the order of the files is the stream order.

The data directory defaults to ``<repo>/../shared/data`` and can be overridden with the
``SPELA_DATA`` environment variable. Provenance of each data set is in its folder's
``PROVENANCE.md``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from spela_stream.datasets import read_idx

__all__ = ["DATA_DIR", "STREAMS", "load_stream", "parse_arff"]

DATA_DIR: Path = Path(
    os.environ.get("SPELA_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)

STREAMS: tuple[str, ...] = ("optdigits", "letter", "elec2", "mnist")

Stream = tuple[np.ndarray, list]


def _data_path(*parts: str) -> Path:
    if not DATA_DIR.is_dir():
        raise FileNotFoundError(
            f"data directory {DATA_DIR} does not exist; set SPELA_DATA to the folder that holds "
            "mnist-test/, elec2/, letter/ and optdigits/"
        )
    path = DATA_DIR.joinpath(*parts)
    if not path.is_file():
        raise FileNotFoundError(f"missing data file {path}")
    return path


def _load_mnist() -> Stream:
    images = read_idx(_data_path("mnist-test", "t10k-images-idx3-ubyte.gz"))
    labels = read_idx(_data_path("mnist-test", "t10k-labels-idx1-ubyte.gz"))
    X = images.reshape(images.shape[0], -1).astype(np.float32)
    return X, [int(v) for v in labels]


def parse_arff(path: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """Minimal dense-ARFF reader: numeric attributes plus a nominal class as the last attribute.

    Nominal feature values that look like numbers (e.g. Elec2's ``day`` in ``{1..7}``) are read as
    their numeric value; other nominal feature values are coded by their index in the declaration.
    Returns ``(attribute_names, X, labels)``, with the class attribute excluded from ``X``.
    """
    names: list[str] = []
    kinds: list[list[str] | None] = []  # None = numeric, else the nominal values
    rows: list[list[str]] = []
    in_data = False
    with open(path, encoding="ascii") as fh:
        for line in fh:
            line = line.strip()
            if not line or line.startswith("%"):
                continue
            if in_data:
                rows.append([v.strip().strip("'\"") for v in line.split(",")])
                continue
            head = line.split(None, 1)[0].lower()
            if head == "@attribute":
                rest = line.split(None, 1)[1]
                if "{" in rest:
                    name = rest[: rest.index("{")].strip()
                    body = rest[rest.index("{") + 1 : rest.rindex("}")]
                    kinds.append([v.strip().strip("'\"") for v in body.split(",")])
                else:
                    name, typ = rest.rsplit(None, 1)
                    if typ.lower() not in ("numeric", "real", "integer"):
                        raise ValueError(f"{path}: unsupported attribute type {typ!r}")
                    kinds.append(None)
                names.append(name.strip().strip("'\""))
            elif head == "@data":
                in_data = True
    if not names or kinds[-1] is None:
        raise ValueError(f"{path}: expected a nominal class as the last attribute")
    n_attr = len(names)
    classes = set(kinds[-1])
    X = np.empty((len(rows), n_attr - 1), dtype=np.float32)
    labels: list[str] = []
    converters: list[Callable[[str], float]] = []
    for kind in kinds[:-1]:
        if kind is None or all(_is_number(v) for v in kind):
            converters.append(float)
        else:
            index = {v: float(i) for i, v in enumerate(kind)}
            converters.append(index.__getitem__)
    for r, row in enumerate(rows):
        if len(row) != n_attr:
            raise ValueError(f"{path}: data row {r} has {len(row)} values, expected {n_attr}")
        if "?" in row:
            raise ValueError(f"{path}: data row {r} has a missing value")
        X[r] = [conv(v) for conv, v in zip(converters, row[:-1], strict=True)]
        if row[-1] not in classes:
            raise ValueError(f"{path}: data row {r} has unknown class {row[-1]!r}")
        labels.append(row[-1])
    return names[:-1], X, labels


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _load_elec2() -> Stream:
    _, X, labels = parse_arff(_data_path("elec2", "elecNormNew.arff"))
    return X, labels


def _load_letter() -> Stream:
    path = _data_path("letter", "letter-recognition.data")
    labels: list[str] = []
    feats: list[list[float]] = []
    with open(path, encoding="ascii") as fh:
        for line in fh:
            if not line.strip():
                continue
            parts = line.strip().split(",")
            labels.append(parts[0])
            feats.append([float(v) for v in parts[1:]])
    return np.asarray(feats, dtype=np.float32), labels


def _load_optdigits() -> Stream:
    parts = [
        np.loadtxt(_data_path("optdigits", f"optdigits.{ext}"), delimiter=",", dtype=np.int64)
        for ext in ("tra", "tes")
    ]
    data = np.concatenate(parts, axis=0)
    return data[:, :-1].astype(np.float32), [int(v) for v in data[:, -1]]


_LOADERS: dict[str, Callable[[], Stream]] = {
    "mnist": _load_mnist,
    "elec2": _load_elec2,
    "letter": _load_letter,
    "optdigits": _load_optdigits,
}


def load_stream(name: str, limit: int | None = None) -> Stream:
    """Load stream ``name`` (one of :data:`STREAMS`), optionally only its first ``limit`` rows."""
    try:
        loader = _LOADERS[name]
    except KeyError:
        raise ValueError(f"unknown stream {name!r}; choose from {', '.join(STREAMS)}") from None
    X, y = loader()
    if limit is not None:
        X, y = X[:limit], y[:limit]
    return np.ascontiguousarray(X, dtype=np.float32), list(y)
