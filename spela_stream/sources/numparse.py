"""Reading feature values from text: the one strict number parse, and fast CSV paths.

``number`` is what every text reader uses for a feature value: ASCII only, no underscores.
Python's ``float`` alone also takes ``1_000``, Arabic-Indic (``١٢٣``) and full-width (``１２３``)
digits, which in a data file are a mistake, not a number. What is left of ``float``'s grammar is
exactly the plain one: sign, digits, decimal point, exponent, the words nan/inf/infinity (any
case; the readers then refuse them as not finite) and surrounding ASCII whitespace (`` 12 `` is
12, as in a CSV written with ``", "``). So the check is two byte tests before ``float``, no regex.

The fast paths each return the float32 vector, or None when the text is not of its simple
form; the caller then falls back to ``number`` per field (which also names the field that is
wrong). Both give exactly what ``float(field)`` would, cast to float32.
"""

from __future__ import annotations

import numpy as np


def is_strict(text: str | bytes) -> bool:
    """Whether ``float`` may read ``text`` (one field or a whole line): ASCII, no underscore."""
    if isinstance(text, bytes):
        return text.isascii() and b"_" not in text
    return text.isascii() and "_" not in text


def number(text: str) -> float:
    """``text`` as a float, strictly (see the module docstring); ValueError if it is not one."""
    if not is_strict(text):
        raise ValueError(f"not a plain ASCII number: {text!r}")
    return float(text)


_INT_SAFE = 2**62  # np.fromstring saturates at the int64 limits instead of failing
_DIGITS = b"0123456789"
_POW10 = 10.0 ** np.arange(16)  # exact in float64
_PLAIN = np.zeros(256, dtype=bool)  # bytes a plain decimal may hold besides the separator
_PLAIN[list(b"0123456789.-")] = True
_MAX_DIGITS = 15  # a mantissa of 15 digits is an exact float64 integer


def plain_ints(feat: bytes, sep: bytes, n: int) -> np.ndarray | None:
    """``n`` integers (digits, a leading minus) split by ``sep``: one np.fromstring call."""
    rest = feat.translate(None, _DIGITS + sep)
    if rest:
        if rest.strip(b"-"):
            return None
        # np.fromstring reads a lone "-" as 0: let through only a minus that starts a number
        if (
            feat.count(b"-") != feat.count(sep + b"-") + feat.startswith(b"-")
            or b"-" + sep in feat
            or feat.endswith(b"-")
        ):
            return None
    try:
        vec = np.fromstring(feat, dtype=np.int64, sep=sep.decode())
    except ValueError:
        return None
    if vec.shape[0] != n or vec.max() >= _INT_SAFE or vec.min() <= -_INT_SAFE:
        return None
    return vec.astype(np.float32)


def plain_decimals(feat: bytes, sep: bytes, n: int) -> np.ndarray | None:
    """``n`` decimals like ``-0.125`` (at most 15 digits, no exponent) split by ``sep``.

    Vectorised over the bytes: each digit adds ``d * 10**(digits after it in its field)`` to an
    integer mantissa (exact), which is divided by ``10**(digits after the point)``: one
    correctly rounded division, so the result equals ``float(field)``.
    """
    b = np.frombuffer(feat, dtype=np.uint8)  # (L,)
    is_sep = b == sep[0]
    if b.size == 0 or not (_PLAIN[b] | is_sep).all():
        return None
    seps = np.flatnonzero(is_sep)
    if seps.size != n - 1:
        return None
    starts = np.empty(n, dtype=np.intp)  # (n,) first byte of each field
    starts[0] = 0
    starts[1:] = seps + 1
    ends = np.empty(n, dtype=np.intp)  # (n,) one past the last byte
    ends[:-1] = seps
    ends[-1] = b.size
    lens = ends - starts
    if lens.min() < 1:
        return None
    is_digit = b >= ord("0")  # among the allowed bytes only digits are >= "0"
    digits_upto = np.cumsum(is_digit)  # (L,) digits at or before each byte
    digits_end = digits_upto[ends - 1]  # (n,) digits through each field's end
    per_field = np.diff(digits_end, prepend=0)
    if per_field.min() < 1 or per_field.max() > _MAX_DIGITS:
        return None
    field = np.repeat(np.arange(n), lens + 1)[: b.size]  # (L,) field of each byte
    after: np.ndarray = digits_end[field] - digits_upto  # (L,) digits after each byte in its field
    weights = np.where(is_digit, (b.astype(np.float64) - 48.0) * _POW10[after.clip(0, 15)], 0.0)
    mantissa = np.add.reduceat(weights, starts)  # (n,) exact integers
    dots = np.flatnonzero(b == ord("."))
    if dots.size:
        in_field = field[dots]
        if dots.size > 1 and not np.diff(in_field).all():
            return None  # two points in one field
        mantissa[in_field] /= _POW10[after[dots]]
    minus = np.flatnonzero(b == ord("-"))
    if minus.size:
        in_field = field[minus]
        if (minus != starts[in_field]).any():
            return None  # a minus inside a number
        mantissa[in_field] = -mantissa[in_field]
    return mantissa.astype(np.float32)
