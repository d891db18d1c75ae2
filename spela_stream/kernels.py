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
_TINY_VAR = 1e-16  # scaling.TINY_STD squared
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
def leaky(z: np.ndarray, slope: float, y: np.ndarray) -> None:  # pragma: no cover - compiled
    """y = LeakyReLU(z), as ``forward``'s last line."""
    s = np.float32(slope)
    for i in range(z.shape[0]):
        zi = z[i]
        y[i] = zi if zi > 0 else zi * s


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
def cosines(
    v: np.ndarray, y: np.ndarray, n_classes: int, out: np.ndarray
) -> float:  # pragma: no cover - compiled
    """out[c] = cos(y, v_c) for the first n_classes unit class vectors v (n_alloc, d), summed in
    float64 (out float32: a layer's scores; float64: the contrastive step's); returns
    max(|y|, eps)."""
    nn = 0.0
    for j in range(y.shape[0]):
        nn += float(y[j]) * float(y[j])
    n = max(math.sqrt(nn), _EPS)
    for c in range(n_classes):
        acc = 0.0
        for j in range(y.shape[0]):
            acc += float(v[c, j]) * float(y[j])
        out[c] = acc / n
    return n


@_compiled
def update_contrastive(
    w: np.ndarray,
    b: np.ndarray,
    x: np.ndarray,
    z: np.ndarray,
    y: np.ndarray,
    v: np.ndarray,
    k: int,
    n_known: int,
    temperature: float,
    lr: float,
    slope: float,
    g: np.ndarray,
    cos: np.ndarray,
    n: float,
) -> None:  # pragma: no cover - compiled
    """One SGD step on the contrastive loss T * CE(softmax(cos(y, v_j) / T), k) over the first
    n_known class vectors (``rule.contrastive_grad``): dL/dy = sum_j q_j (v_j - c_j y_hat) / n,
    q = p - onehot(k), times phi'(z); W -= lr g x^T (rank 1), b -= lr g. ``cos`` and ``n``:
    ``cosines`` of y over (at least) the first n_known classes."""
    d_out, d_in = w.shape
    top = -1e300
    for c in range(n_known):
        top = max(top, cos[c] / temperature)
    q = np.empty(n_known)
    total = 0.0
    for c in range(n_known):
        q[c] = math.exp(cos[c] / temperature - top)
        total += q[c]
    qc = 0.0
    for c in range(n_known):
        q[c] = q[c] / total - (1.0 if c == k else 0.0)
        qc += q[c] * cos[c]
    for i in range(d_out):
        acc = 0.0
        for c in range(n_known):
            acc += q[c] * float(v[c, i])
        gi = (acc - qc * float(y[i]) / n) / n
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


@_compiled
def layer_step(
    w: np.ndarray,
    b: np.ndarray,
    v: np.ndarray,
    k: int,
    h: np.ndarray,
    xin: np.ndarray,
    mean: np.ndarray,
    m2: np.ndarray,
    norm_mode: int,
    denom: float,
    n_classes: int,
    out_scores: np.ndarray,
    z: np.ndarray,
    y: np.ndarray,
    g: np.ndarray,
    lr: float,
    slope: float,
    obs_mode: int,
    keep: float,
    add: float,
    beta: float,
    count: int,
    contrast: float,
    n_known: int,
    product: bool,
) -> None:  # pragma: no cover - compiled
    """One layer's whole per-sample step in one call, the kernels above in the torch path's
    order: the input h normalised into xin (``norm_mode`` 0: xin is h itself or already
    normalised, 1: zeros before any statistics, 2: ``normalise`` with ``denom``), ``forward``
    into z and y (not ``product``: z holds W xin + b already, y is computed from it),
    ``cosines`` of the first n_classes into out_scores (none when n_classes < 0), ``update``
    towards v[k]
    (``update_contrastive`` over the first n_known classes when ``contrast`` > 0), then the raw
    h folded into the statistics (``obs_mode`` 0: none, 1: ``ema_update``, 2:
    ``welford_update`` with ``count``)."""
    if norm_mode == 1:
        for j in range(xin.shape[0]):
            xin[j] = 0.0
    elif norm_mode == 2:
        normalise(h, mean, m2, denom, xin)
    if product:
        forward(w, b, xin, slope, z, y)
    else:
        leaky(z, slope, y)
    if contrast > 0:
        # the scores and the contrastive step's cosines are one computation: once, in float64
        m = max(n_known, k + 1)
        cos = np.empty(max(m, n_classes))
        n = cosines(v, y, cos.shape[0], cos)
        for c in range(n_classes):
            out_scores[c] = cos[c]
        update_contrastive(w, b, xin, z, y, v, k, m, contrast, lr, slope, g, cos, n)
    else:
        if n_classes >= 0:
            cosines(v, y, n_classes, out_scores)
        update(w, b, xin, z, y, v[k], lr, slope, g)
    if obs_mode == 1:
        ema_update(mean, m2, h, keep, add, beta)
    elif obs_mode == 2:
        welford_update(mean, m2, h, count)


@_compiled
def standardise_learn(
    x: np.ndarray,
    mean: np.ndarray,
    m2: np.ndarray,
    counts: np.ndarray,
    count: int,
    tiny: float,
    clip: float,
    out: np.ndarray,
) -> bool:  # pragma: no cover - compiled
    """``Standardiser.transform`` then ``update`` of one float64 row x, its output in float32
    out; False, and nothing changed, when x holds a missing value (NaN): the caller's path then.
    ``clip`` < 0: no clipping. Elementwise, so the same numbers as numpy's."""
    d = x.shape[0]
    for j in range(d):
        if math.isnan(x[j]):
            return False
    for j in range(d):
        if count == 0:
            r = 0.0
        else:
            c = counts[j]
            std = math.sqrt(m2[j] / max(c, 1))
            scale = 1.0 / max(std, tiny) if std > tiny else 1.0
            if c <= 0:
                scale = 0.0
            r = (x[j] - mean[j]) * scale
            if math.isnan(r):
                r = 0.0
            if clip >= 0.0:
                r = min(max(r, -clip), clip)
        out[j] = r
    for j in range(d):
        counts[j] += 1
        delta = x[j] - mean[j]
        mean[j] += delta / counts[j]
        m2[j] += delta * (x[j] - mean[j])
    return True


@_compiled
def standardise_row(
    x: np.ndarray,
    mean: np.ndarray,
    m2: np.ndarray,
    counts: np.ndarray,
    count: int,
    tiny: float,
    clip: float,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """``Standardiser.transform`` of one row x (a missing value, NaN, gives 0) into out, the
    statistics left alone (a replay's input); ``clip`` < 0: no clipping. Elementwise, as numpy."""
    for j in range(x.shape[0]):
        if count == 0:
            r = 0.0
        else:
            c = counts[j]
            std = math.sqrt(m2[j] / max(c, 1))
            scale = 1.0 / max(std, tiny) if std > tiny else 1.0
            if c <= 0:
                scale = 0.0
            r = (float(x[j]) - mean[j]) * scale
            if math.isnan(r):
                r = 0.0
            if clip >= 0.0:
                r = min(max(r, -clip), clip)
        out[j] = r


@_compiled
def readout_scores(
    means: np.ndarray,
    counts: np.ndarray,
    var: np.ndarray,
    n: int,
    h: np.ndarray,
    n_classes: int,
    eps: float,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """``readout.ClassMeans.scores`` for one output h (d,) into out (n_classes,): the cosine of
    the standardised, centred output and class means; -1 for a class with no sample yet, 1 for
    the only class seen. The same equations as numpy's, its sums in order."""
    d = h.shape[0]
    c = min(n_classes, counts.shape[0])
    for j in range(n_classes):
        out[j] = -1.0
    n_seen = 0
    for j in range(c):
        if counts[j] > 0:
            n_seen += 1
    if n_seen == 0:
        return
    if n_seen == 1:
        for j in range(c):
            if counts[j] > 0:
                out[j] = 1.0
        return
    scale = np.empty(d)
    centre = np.zeros(d)
    for i in range(d):
        scale[i] = 1.0 / math.sqrt(var[i] + eps) if n else 1.0
    for j in range(c):
        if counts[j] > 0:
            for i in range(d):
                centre[i] += means[j, i]
    for i in range(d):
        centre[i] /= n_seen
    q = np.empty(d)
    qq = 0.0
    for i in range(d):
        q[i] = (h[i] - centre[i]) * scale[i]
        qq += q[i] * q[i]
    qn = math.sqrt(qq)
    for j in range(c):
        if counts[j] > 0:
            pp = 0.0
            dot = 0.0
            for i in range(d):
                p = (means[j, i] - centre[i]) * scale[i]
                pp += p * p
                dot += q[i] * p
            out[j] = dot / max(qn * math.sqrt(pp), 1e-12)


@_compiled
def readout_update(
    means: np.ndarray,
    counts: np.ndarray,
    var: np.ndarray,
    n: int,
    h: np.ndarray,
    k: int,
    mean_window: int,
    var_window: int,
) -> int:  # pragma: no cover - compiled
    """``readout.ClassMeans.update`` for one output h (d,) of class k (counts already long
    enough); returns the new n. Elementwise, so the same numbers as numpy's."""
    counts[k] += 1
    n_c = counts[k]
    step = min(n_c, mean_window)
    if n_c > 1:
        n += 1
    vstep = min(n, var_window)
    for i in range(h.shape[0]):
        r = float(h[i])
        delta = r - means[k, i]
        means[k, i] += delta / step
        if n_c > 1:
            var[i] += (delta * (r - means[k, i]) - var[i]) / vstep
    return n


@_compiled
def calibration_update(
    s: np.ndarray, k: int, grid: np.ndarray, nll: np.ndarray, decay: float
) -> None:  # pragma: no cover - compiled
    """``calibration.OnlineTemperature.update`` for one sample's scores s (C,) of true class k:
    nll[g] = decay nll[g] + logsumexp(s / grid[g]) - s[k] / grid[g], per temperature."""
    n = s.shape[0]
    # max_j(s_j / t) is max_j(s_j) / t: a correctly rounded division by t > 0 keeps the order
    # (with a NaN score the sum is NaN either way)
    smax = float(s[0])
    for j in range(1, n):
        smax = max(smax, float(s[j]))
    z = np.empty(n)
    for g in range(grid.shape[0]):
        t = grid[g]
        for j in range(n):
            z[j] = float(s[j]) / t
        top = smax / t
        acc = 0.0
        for j in range(n):
            acc += math.exp(z[j] - top)
        nll[g] = nll[g] * decay + ((math.log(acc) + top) - z[k])


@_compiled
def fitted_temperature(
    nll: np.ndarray, grid: np.ndarray, log_grid: np.ndarray, log_step: float
) -> float:  # pragma: no cover - compiled
    """``OnlineTemperature.temperature``'s fit from nll (G,): the grid's minimum (the first of
    equal ones, as numpy's argmin) refined by a parabola through its neighbours, in log space;
    -1 when nll holds NaN (the caller's numpy path decides then)."""
    g = nll.shape[0]
    i = 0
    best = nll[0]
    for j in range(g):
        if math.isnan(nll[j]):
            return -1.0
        if nll[j] < best:
            best = nll[j]
            i = j
    if i == 0 or i == g - 1:
        return float(grid[i])
    lo = nll[i - 1]
    mid = nll[i]
    hi = nll[i + 1]
    curve = lo - 2 * mid + hi
    shift = 0.5 * (lo - hi) / curve if curve > 0 else 0.0
    return math.exp(log_grid[i] + shift * log_step)


@_compiled
def softmax_top(s: np.ndarray, temperature: float) -> tuple[int, float]:  # pragma: no cover
    """The top class of softmax(s / temperature) over s (C,) and its probability (the first
    of equal probabilities, as numpy's argmax)."""
    n = s.shape[0]
    top = float(s[0]) / temperature
    for j in range(1, n):
        top = max(top, float(s[j]) / temperature)
    acc = 0.0
    for j in range(n):
        acc += math.exp(float(s[j]) / temperature - top)
    best, conf = 0, -1.0
    for j in range(n):
        p = math.exp(float(s[j]) / temperature - top) / acc
        if p > conf:
            best, conf = j, p
    return best, conf


@_compiled
def argmax(s: np.ndarray) -> int:  # pragma: no cover - compiled
    """numpy's argmax of s (C,): the first of equal maxima, the first NaN if any."""
    best = 0
    for j in range(s.shape[0]):
        if math.isnan(s[j]):
            return j
        if s[j] > s[best]:
            best = j
    return best


@_compiled
def readout_learn(
    vec: np.ndarray,
    means: np.ndarray,
    counts: np.ndarray,
    var: np.ndarray,
    n: int,
    h: np.ndarray,
    k: int,
    n_classes: int,
    hits: np.ndarray,
    choice_decay: float,
    eps: float,
    mean_window: int,
    var_window: int,
    out: np.ndarray,
) -> tuple[int, bool]:  # pragma: no cover - compiled
    """``Readout.learn(0, vec, h, [k])`` for one output h (d,) in one call: with n_classes >= 0,
    the class means' scores into out (n_classes,), the reported readout chosen on the hit rates
    (``hits`` (2,), before this sample counts), the hits folded in (a known class k); then the
    class means learn h (``readout_update``; counts long enough). Returns the new n and whether
    the means' scores (out), not vec, are reported."""
    use_means = False
    if n_classes >= 0:
        readout_scores(means, counts, var, n, h, n_classes, eps, out)
        use_means = hits[1] > hits[0]
        if k < n_classes:
            hit_v = 1.0 if argmax(vec[:n_classes]) == k else 0.0
            hit_m = 1.0 if argmax(out[:n_classes]) == k else 0.0
            hits[0] = choice_decay * hits[0] + (1 - choice_decay) * hit_v
            hits[1] = choice_decay * hits[1] + (1 - choice_decay) * hit_m
    n = readout_update(means, counts, var, n, h, k, mean_window, var_window)
    return n, use_means


@_compiled
def _choose_fit(
    row: np.ndarray,
    i: int,
    k: int,
    temps: np.ndarray,
    choose: bool,
    calibrate: bool,
    grid: np.ndarray,
    nll: np.ndarray,
    decay: float,
    log_grid: np.ndarray,
    log_step: float,
    tops: np.ndarray,
    confs: np.ndarray,
    fitted: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Stream i of ``choose_calibrate``, its scores row (C,)."""
    if choose:
        top, conf = softmax_top(row, temps[i])
        tops[i] = top
        confs[i] = conf
    if calibrate:
        calibration_update(row, k, grid, nll, decay)
        fitted[i] = fitted_temperature(nll, grid, log_grid, log_step)


@_compiled
def choose_calibrate(
    s: np.ndarray,
    last: np.ndarray,
    use_last: bool,
    k: int,
    temps: np.ndarray,
    choose: bool,
    calibrate: bool,
    grid: np.ndarray,
    nlls: Any,
    decay: float,
    log_grid: np.ndarray,
    log_step: float,
    tops: np.ndarray,
    confs: np.ndarray,
    fitted: np.ndarray,
) -> int:  # pragma: no cover - compiled
    """One sample's predictions and temperature fits over its streams in one call: stream i's
    scores are s[i] (S, C), the last one's ``last`` (C,) instead where ``use_last``. With
    ``choose``, each stream's top class and softmax probability at temps[i] (``softmax_top``)
    into tops, confs; with ``calibrate``, each stream's nll (``nlls``, a tuple of (G,)) folds
    the sample of class k in (``calibration_update``) and its fit goes to fitted[i]
    (``fitted_temperature``, -1: numpy's fit decides). Returns numpy's argmax of the last
    stream's scores (the drift's error)."""
    n_streams = s.shape[0]
    for i in range(n_streams):
        if use_last and i == n_streams - 1:
            _choose_fit(
                last, i, k, temps, choose, calibrate, grid, nlls[i], decay, log_grid, log_step,
                tops, confs, fitted,
            )  # fmt: skip
        else:
            _choose_fit(
                s[i], i, k, temps, choose, calibrate, grid, nlls[i], decay, log_grid, log_step,
                tops, confs, fitted,
            )  # fmt: skip
    if use_last:
        return argmax(last)
    return argmax(s[n_streams - 1])


@_compiled
def memory_note(
    seen: np.ndarray,
    recent: np.ndarray,
    last: np.ndarray,
    k: int,
    decay: float,
    counts: np.ndarray,
    big: np.ndarray,
) -> tuple[int, float]:  # pragma: no cover - compiled
    """The arithmetic of ``ReplayMemory.add`` for a full memory, before its draws: class k
    stamped in ``last`` (the samples seen once it is counted) and counted in ``seen`` and the
    recent shares (recent *= decay, recent[k] += 1 - decay), then the classes stored most
    (``counts``) written ascending into ``big``. Returns how many, or 0 when k is among them,
    and the share of k's samples kept (counts[k] / seen[k], reservoir sampling within k then)."""
    total = 0
    for j in range(seen.shape[0]):
        total += seen[j]
    last[k] = total + 1
    seen[k] += 1
    for j in range(recent.shape[0]):
        recent[j] *= decay
    recent[k] += 1.0 - decay
    largest = counts[0]
    for j in range(1, counts.shape[0]):
        largest = max(largest, counts[j])
    if not counts[k] < largest:
        return 0, counts[k] / seen[k]
    n_big = 0
    for j in range(counts.shape[0]):
        if counts[j] == largest:
            big[n_big] = j
            n_big += 1
    return n_big, 0.0


@_compiled
def memory_shortfall(
    seen: np.ndarray,
    recent: np.ndarray,
    recent_weight: float,
    last: np.ndarray,
    gaps: float,
    out: np.ndarray,
) -> bool:  # pragma: no cover - compiled
    """``ReplayMemory.shortfall(gaps)`` into out (C,): per class, max(seen / total - recent /
    recent_weight, 0), 0 where gaps > 0 and the class has not gone ((total - last) * seen >
    gaps * total fails); elementwise, so numpy's numbers. False, nothing written, when no
    sample was counted (total 0: numpy's division by zero decides then)."""
    total = 0
    for j in range(seen.shape[0]):
        total += seen[j]
    if total == 0:
        return False
    for j in range(seen.shape[0]):
        d = seen[j] / total - recent[j] / recent_weight
        v = d if d >= 0.0 or math.isnan(d) else 0.0  # np.maximum(d, 0.0)
        if gaps > 0.0 and not (total - last[j]) * seen[j] > gaps * total:
            v = 0.0
        out[j] = v
    return True
