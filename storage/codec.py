"""Arrays to little-endian bytes with a checksum and back; JSON that round-trips exactly.

A tensor row holds the dtype as numpy spells it little-endian (``'<f4'``), the shape as a JSON
list and the C-order bytes, so ``numpy.frombuffer(data, dtype).reshape(shape)`` reads it back
with nothing but the ``sqlite3`` module. No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from spela_stream.errors import CheckpointError

# Plain numbers, booleans, bytes and text (and dates) have a byte layout numpy can name in a
# string; object and structured (void) arrays do not, so they are refused.
ARRAY_KINDS = "biufcSUmM"
_SCALARS = frozenset({str, int, float, bool, type(None)})


@dataclass(frozen=True)
class Tensor:
    """One array ready for the ``tensors`` table: little-endian bytes and their sha256."""

    name: str
    dtype: str
    shape: list[int]
    data: memoryview
    checksum: str

    @property
    def nbytes(self) -> int:
        """Size of the data in bytes."""
        return self.data.nbytes


def encode_array(name: str, array: np.ndarray) -> Tensor:
    """C-order little-endian bytes of ``array``, with its dtype string, shape and sha256."""
    if array.dtype.kind not in ARRAY_KINDS or array.dtype.fields is not None:
        raise CheckpointError(
            f"state[{name!r}] is an array of dtype {array.dtype}; only numeric, bool and "
            "fixed-width text arrays can be stored (convert it, or store a JSON value)"
        )
    dtype = array.dtype.newbyteorder("<")
    flat = np.ascontiguousarray(array, dtype=dtype).reshape(-1)  # no copy when already so
    data = flat.view(np.uint8).data  # a memoryview: no copy
    return Tensor(name, dtype.str, list(array.shape), data, hashlib.sha256(data).hexdigest())


def decode_array(name: str, dtype: str, shape: str, data: bytes, checksum: str) -> np.ndarray:
    """A writable native-order array from a ``tensors`` row; CheckpointError on any mismatch."""
    try:
        le = np.dtype(dtype)
        dims = json.loads(shape)
        if not isinstance(dims, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims
        ):
            raise ValueError(f"shape {shape}")
        if le.kind not in ARRAY_KINDS or le.fields is not None:
            raise ValueError(f"dtype {dtype}")
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"tensor {name!r} is corrupt: bad {exc}") from None
    expected = math.prod(dims) * le.itemsize
    if not isinstance(data, bytes) or len(data) != expected:
        got = len(data) if isinstance(data, bytes) else type(data).__name__
        raise CheckpointError(
            f"tensor {name!r} is corrupt: {got} bytes, expected {expected} for {dtype} {dims}"
        )
    if hashlib.sha256(data).hexdigest() != checksum:
        raise CheckpointError(f"tensor {name!r} is corrupt: its sha256 does not match")
    # astype copies: the result is writable and in native byte order (a no-op swap on x86).
    return np.frombuffer(data, dtype=le).astype(le.newbyteorder("="), copy=True).reshape(dims)


def check_json(value: Any, where: str) -> None:
    """Raise CheckpointError unless ``value`` survives a JSON round trip unchanged.

    JSON would silently turn a dict's int keys into strings and a numpy integer into an error;
    labels ``1``, ``"1"`` and ``True`` must stay apart, so keys must be str and leaves plain.
    Tuples are allowed and come back as lists.
    """
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, path = stack.pop()
        if item is None or isinstance(item, str | int | float):  # np.float64 is a float
            continue
        if isinstance(item, dict):
            for key, sub in item.items():
                if type(key) is not str:
                    raise CheckpointError(
                        f"{path} has a key {key!r} of type {type(key).__name__}; "
                        "JSON keys are text (convert the key with str())"
                    )
                stack.append((sub, f"{path}[{key!r}]"))
        elif isinstance(item, list | tuple):
            if all(type(sub) in _SCALARS for sub in item):  # fast path: a flat list
                continue
            stack.extend((sub, f"{path}[{i}]") for i, sub in enumerate(item))
        else:
            raise CheckpointError(
                f"{path} is a {type(item).__module__}.{type(item).__qualname__}, which JSON "
                "cannot hold (use int(), float(), a list, or a numpy array at the top level)"
            )


def dumps(value: Any, where: str) -> str:
    """Compact JSON of a value that ``check_json`` accepts."""
    check_json(value, where)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
