"""Turning what a user hands the model into checked float64 arrays and plain labels.

Everything here validates before anything is learned, so a bad sample raises an ``InputError``
subclass that names the place and leaves the model unchanged.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np

from .errors import LabelError, NonFiniteError, WidthError

Label = int | str | bool
MAX_ABS = 1e30  # larger magnitudes overflow float32 weights or the standardiser's squares
_MAX_SQUARES = MAX_ABS * MAX_ABS


def _host(x: object) -> object:
    """A torch tensor as a numpy array (torch itself is not imported here: sources use this
    module and must start fast); anything else unchanged."""
    if type(x).__module__.startswith("torch") and hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return x


def positions(mask: np.ndarray) -> str:
    """Name the first few True places of a (d,) or (B, d) mask: 'feature index(es) [3, 7]'."""
    hits = np.argwhere(mask)[:5]
    if mask.ndim == 1:
        return f"feature index(es) {hits[:, 0].tolist()}"
    return "(row, feature) " + ", ".join(f"({r}, {c})" for r, c in hits.tolist())


def check_label(y: object) -> Label:
    """Return ``y`` as a plain int, str or bool, or raise LabelError."""
    if type(y) is int or type(y) is str:  # the common cases, already plain
        return y
    if isinstance(y, bool | np.bool_):
        return bool(y)
    if isinstance(y, int | np.integer):
        return int(y)
    if isinstance(y, str):
        return str(y)
    raise LabelError(
        f"label {y!r} has type {type(y).__name__}; labels must be int, str or bool "
        "(convert float class codes with int())"
    )


def check_label_kinds(new: Iterable[Label], known: list[Label]) -> None:
    """Raise LabelError if a label in ``new`` is not of the kind (int, str or bool, as
    ``check_label`` returns them) of the first label the model saw: ``known[0]``, else the first
    of ``new``. ``1`` then ``"yes"`` is an error, not a third class beside ``"1"``."""
    first: Label | None = known[0] if known else None
    for y in new:
        if first is None:
            first = y
        elif type(y) is not type(first):
            raise LabelError(
                f"label {y!r} is a {type(y).__name__}, but this model's labels are "
                f"{type(first).__name__} (the first was {first!r}); all labels must be of one "
                "kind: fix the record, or map the labels to one type before streaming"
            )


def as_vector(x: object, names: list[Hashable] | None, n_features: int | None) -> np.ndarray:
    """Turn one sample (dict or vector) into a float64 (d,) array, validating everything."""
    if type(x) is np.ndarray and x.ndim == 1 and x.dtype.kind in "biuf":  # the common case
        vec = np.asarray(x, dtype=np.float64)
    elif isinstance(x, Mapping):
        names = names or list(x)
        if len(x) != len(names) or any(k not in x for k in names):
            extra = [k for k in x if k not in set(names)]
            missing = [k for k in names if k not in x]
            raise WidthError(
                f"feature dict keys differ from the ones first seen: "
                f"missing {missing[:5]}, unknown {extra[:5]}"
            )
        try:
            vec = np.array([x[k] for k in names], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            bad = [k for k in names if not isinstance(x[k], int | float | np.number)]
            raise WidthError(f"feature(s) {bad[:5]} are not numbers: {exc}") from None
    else:
        x = _host(x)
        try:
            vec = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise WidthError(f"sample is not a numeric vector: {exc}") from None
        if vec.ndim != 1:
            raise WidthError(f"sample must be a 1-d vector, got shape {vec.shape}")
    check_values(vec, n_features)
    return vec


def check_values(arr: np.ndarray, n_features: int | None) -> None:
    """Width, finiteness and magnitude of a vector (d,) or a batch (B, d)."""
    width = arr.shape[-1]
    if n_features is not None and width != n_features:
        raise WidthError(f"sample has {width} features, the model was built for {n_features}")
    if width == 0:
        raise WidthError("sample has no features")
    if arr.ndim == 1 and float(np.dot(arr, arr)) <= _MAX_SQUARES:
        # one reduction for one sample: a sum of squares is NaN or infinite when any value is,
        # and at least every value's square, so within it every value is finite and in range
        return
    if not np.isfinite(arr).all():
        where = positions(~np.isfinite(arr))
        raise NonFiniteError(f"sample holds NaN or infinity at {where}")
    if np.abs(arr).max() > MAX_ABS:
        where = positions(np.abs(arr) > MAX_ABS)
        raise NonFiniteError(
            f"{where} exceed {MAX_ABS:g} in magnitude, beyond what float32 learning can hold; "
            "rescale the feature"
        )


def as_matrix(xs: object, names: list[Hashable] | None, n_features: int | None) -> np.ndarray:
    """Turn a batch (2-d array, DataFrame or list of samples) into a float64 (B, d) array."""
    if hasattr(xs, "to_dict") and hasattr(xs, "columns"):  # a pandas DataFrame
        xs = xs.to_dict(orient="records")
    xs = _host(xs)
    if isinstance(xs, np.ndarray) and xs.ndim == 2 and xs.dtype.kind in "biuf":
        batch = xs.astype(np.float64)  # validated at once, not row by row
        if batch.shape[0]:
            check_values(batch, n_features)
        return batch
    rows: Iterable[object]
    if isinstance(xs, Iterable):
        rows = list(xs)
    else:
        raise WidthError(f"a batch must be a 2-d array or a list of samples, got {type(xs)}")
    rows = list(rows)
    if names is None and rows and isinstance(rows[0], Mapping):
        names = list(rows[0])
    vecs = [as_vector(r, names, n_features) for r in rows]
    if not vecs:
        return np.zeros((0, n_features or 0))
    widths = {v.shape[0] for v in vecs}
    if len(widths) > 1:
        raise WidthError(f"samples in the batch have different widths {sorted(widths)}")
    return np.stack(vecs)


def name_order(names: Iterable[Hashable]) -> list[Hashable]:
    """Feature names sorted (by type and text where they do not compare): the layout a dict's
    features take, whatever the order of its keys."""
    found = list(names)
    try:
        return sorted(found)  # type: ignore[type-var]
    except TypeError:
        return sorted(found, key=lambda k: (type(k).__name__, repr(k)))


def dict_rows(
    rows: Sequence[Mapping[Hashable, object]], index: Mapping[Hashable, int]
) -> tuple[np.ndarray, list[Hashable]]:
    """Samples given as dicts, over the model's feature names, into a float64 (B, d + n) array.

    ``index`` maps the known names to their columns (d of them, in column order); names it lacks
    are the ``n`` new ones, returned in order of first appearance, each dict's new names in
    ``name_order``, and placed after the known columns. A feature a dict lacks is NaN: missing,
    to be imputed.
    """
    if len(rows) == 1 and rows[0] and rows[0].keys() == index.keys():  # one dict, every name
        r = rows[0]
        try:  # its values in column order; anything unusual: the general path, its errors
            vals = np.array([r[k] for k in index], dtype=np.float64)
        except (TypeError, ValueError):
            vals = None
        if vals is not None and vals.ndim == 1 and float(np.dot(vals, vals)) <= _MAX_SQUARES:
            return vals[None, :], []  # check_values' first test, passed
    new: dict[Hashable, int] = {}
    for r in rows:
        fresh = [k for k in r if k not in index and k not in new]
        for k in name_order(fresh):
            new[k] = len(index) + len(new)
    out = np.full((len(rows), len(index) + len(new)), np.nan)
    for i, r in enumerate(rows):
        if not r:
            raise WidthError("sample has no features")
        try:
            vals = np.array(list(r.values()), dtype=np.float64)
        except (TypeError, ValueError) as exc:
            bad = [k for k, v in r.items() if not isinstance(v, int | float | np.number)]
            raise WidthError(f"feature(s) {bad[:5]} are not numbers: {exc}") from None
        try:
            check_values(vals, None)
        except NonFiniteError as exc:  # name the features, not their places in this dict
            names = list(r)
            bad = [names[j] for j in np.flatnonzero(~np.isfinite(vals) | (np.abs(vals) > MAX_ABS))]
            raise type(exc)(f"feature(s) {bad[:5]}: {exc}") from None
        cols = [index[k] if k in index else new[k] for k in r]
        out[i, cols] = vals
    return out, list(new)
