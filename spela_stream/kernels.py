"""Compiled arithmetic of one per-sample SPELA step (numba): the torch path's equations, fused.

Each function is one of the torch path's steps for a single sample, written as loops over float32
weights so that a small model pays microseconds, not torch's per-operation dispatch: a layer's
input normalisation, its forward product and LeakyReLU, its cosine scores against the class
vectors, the closed-form local gradient with the rank-1 weight and bias update, and the running
statistics of its input. Scalars (decays, counts, step sizes) stay in Python (``compiled``).
``fastmath`` is off: the arithmetic is the rule's, in the same order where it matters.
One thread: no ``parallel=True`` (a per-sample step is memory bound and the caller owns cores).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numpy as np
from numba import njit

_EPS = 1e-12
_TINY_VAR = 1e-16  # scaling._TINY_STD squared
_F = TypeVar("_F", bound=Callable[..., Any])


def _compiled(fn: _F) -> _F:
    """``numba.njit`` as the kernels use it (cached on disk, no fastmath), keeping the types."""
    return cast(_F, njit(cache=True, fastmath=False)(fn))


@_compiled
def normalise(
    h: np.ndarray, mean: np.ndarray, m2: np.ndarray, denom: float, out: np.ndarray
) -> None:  # pragma: no cover - compiled
    """out = (h - mean) / std in float32, std from m2 / denom (1 where the variance is ~0)."""
    for j in range(h.shape[0]):
        var = m2[j] / denom
        scale = 1.0 / math.sqrt(var) if var > _TINY_VAR else 1.0
        out[j] = (h[j] - np.float32(mean[j])) * np.float32(scale)


@_compiled
def forward(
    w: np.ndarray, b: np.ndarray, x: np.ndarray, slope: float, z: np.ndarray, y: np.ndarray
) -> None:  # pragma: no cover - compiled
    """z = W x + b, y = LeakyReLU(z): W (d_out, d_in) float32, row by row, on this thread.

    Four partial sums per row (fastmath off, so the compiler keeps each sum's order). numba's
    np.dot would call SciPy's OpenBLAS, which runs its own thread pool: 6 ms a step on
    784-1024-1024 with two shared cores, against torch's 2 ms.
    """
    d_out, d_in = w.shape
    s = np.float32(slope)
    for i in range(d_out):
        a0 = np.float32(0.0)
        a1 = np.float32(0.0)
        a2 = np.float32(0.0)
        a3 = np.float32(0.0)
        j = 0
        while j + 4 <= d_in:
            a0 += w[i, j] * x[j]
            a1 += w[i, j + 1] * x[j + 1]
            a2 += w[i, j + 2] * x[j + 2]
            a3 += w[i, j + 3] * x[j + 3]
            j += 4
        while j < d_in:
            a0 += w[i, j] * x[j]
            j += 1
        zi = b[i] + ((a0 + a1) + (a2 + a3))
        z[i] = zi
        y[i] = zi if zi > 0 else zi * s


@_compiled
def scores(
    v: np.ndarray, y: np.ndarray, n_classes: int, out: np.ndarray
) -> None:  # pragma: no cover
    """out[k] = cos(y, v_k) for the first n_classes unit class vectors v (n_alloc, d)."""
    nn = 0.0
    for j in range(y.shape[0]):
        nn += float(y[j]) * float(y[j])
    n = max(math.sqrt(nn), _EPS)
    for k in range(n_classes):
        acc = 0.0
        for j in range(y.shape[0]):
            acc += float(v[k, j]) * float(y[j])
        out[k] = acc / n


@_compiled
def update(
    w: np.ndarray,
    b: np.ndarray,
    x: np.ndarray,
    z: np.ndarray,
    y: np.ndarray,
    v: np.ndarray,
    lr: float,
    slope: float,
    g: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """One SGD step on log(2 - cos(y, v)): dL/dy = ((c / n) y - v) / (n (2 - c)), times phi'(z);
    W -= lr g x^T (rank 1), b -= lr g."""
    d_out, d_in = w.shape
    nn = 0.0
    dot = 0.0
    for i in range(d_out):
        nn += float(y[i]) * float(y[i])
        dot += float(y[i]) * float(v[i])
    n = max(math.sqrt(nn), _EPS)
    c = dot / n
    a = c / n
    s = -1.0 / (n * (2.0 - c))
    for i in range(d_out):
        gi = (float(v[i]) - a * float(y[i])) * s
        if not z[i] > 0:
            gi *= slope
        g[i] = gi
    for i in range(d_out):
        step = np.float32(-lr * float(g[i]))
        for j in range(d_in):
            w[i, j] += step * x[j]
        b[i] += step


@_compiled
def ema_update(
    mean: np.ndarray, m2: np.ndarray, h: np.ndarray, keep: float, add: float, beta: float
) -> None:  # pragma: no cover - compiled
    """The bias-corrected moving statistics of a per-sample input row (TensorStandardiser)."""
    for j in range(h.shape[0]):
        r = float(h[j])
        mean[j] = mean[j] * keep + r * add
        d = r - mean[j]
        m2[j] = m2[j] * beta + d * d * (1.0 - beta)


@_compiled
def welford_update(
    mean: np.ndarray, m2: np.ndarray, h: np.ndarray, count: int
) -> None:  # pragma: no cover
    """Welford's equal-weight update for one row; ``count`` includes the row."""
    for j in range(h.shape[0]):
        r = float(h[j])
        d = r - mean[j]
        mean[j] += d / count
        m2[j] += d * (r - mean[j])
