"""Drift figures of the continual benchmark, from a learner's prequential hits (1 right, 0 wrong).

- ``rolling(hits, w)[t]``: accuracy over samples ``t - w + 1 .. t`` (fewer at the start).
- Pre-drift level: accuracy over the ``PRE`` samples before the change starts
  (``drift_at - width // 2``).
- Recovery: samples from the change's start until the first ``t`` whose rolling window (``W``
  samples) lies wholly after the start and scores at least the pre-drift level minus one point;
  so ``W`` is the fastest possible figure (a learner the drift does not hurt), ``None``: never.
- Dip: the pre-drift level minus the lowest rolling accuracy after the start.
- Recurring streams: accuracy on each block, and for each concept its first block against its
  returns (mean of the later blocks), on the whole block and on its first fifth (``EARLY``: 1,000
  samples of a 5,000-sample block; how fast the concept is re-learned).
- Over model seeds (``over_seeds``; the stream is the same for every seed, only the learner's
  initialisation and sampling change): every figure is the median of the seeds' figures, with its
  range (min-max) beside it and each seed's in ``per_seed``. A seed that never recovers counts as
  worse than any number, so the median recovery is ``never`` (``None``) when the middle seed (for
  an even count: either middle seed) never recovers; ``recovered`` says how many did. The curve is
  the median of the seeds' rolling accuracies at each point; seconds are summed.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from benchmarks.continual_data import DriftStream
from benchmarks.continual_learners import Learner

W = 500  # rolling window of the recovery figure and of the curves
PRE = 2000  # samples before the change that set the pre-drift level
TOLERANCE = 0.01  # "back within 1 point"
EARLY = 5  # the first 1/EARLY of a recurring block is its "early" part
CURVE_EVERY = 250


def rolling(hits: np.ndarray, w: int) -> np.ndarray:
    """Rolling accuracy over the last ``w`` samples (fewer at the start), for every sample."""
    c = np.concatenate([[0.0], np.cumsum(hits, dtype=np.float64)])
    t = np.arange(1, len(hits) + 1)
    lo = np.maximum(t - w, 0)
    return (c[t] - c[lo]) / (t - lo)


def drift_figures(hits: np.ndarray, drift_at: int, width: int = 1) -> dict[str, Any]:
    """Pre-drift level, post-drift accuracy, dip and recovery (see the module's docstring)."""
    start = drift_at - width // 2
    pre = float(hits[max(0, start - PRE) : start].mean())
    roll = rolling(hits, W)
    after = roll[start:]
    ok = np.flatnonzero(roll[start + W - 1 :] >= pre - TOLERANCE)
    return {
        "pre_drift": pre,
        "post_drift": float(hits[start:].mean()),
        "dip": float(pre - after.min()) if len(after) else 0.0,
        "recovery": int(ok[0] + W) if len(ok) else None,
    }


def recurring_figures(hits: np.ndarray, block: int) -> dict[str, Any]:
    """Accuracy per block; per concept first block vs its returns, whole and first fifth."""
    n_blocks = len(hits) // block
    early = block // EARLY
    blocks = [hits[b * block : (b + 1) * block] for b in range(n_blocks)]
    out: dict[str, Any] = {"blocks": [float(b.mean()) for b in blocks]}
    for concept in (0, 1):
        mine = blocks[concept::2]
        if len(mine) < 2:
            continue
        out[f"concept{concept}"] = {
            "first": float(mine[0].mean()),
            "returns": float(np.mean([b.mean() for b in mine[1:]])),
            "first_early": float(mine[0][:early].mean()),
            "returns_early": float(np.mean([b[:early].mean() for b in mine[1:]])),
        }
    return out


def run_drift(
    learner: Learner, stream: DriftStream, X: np.ndarray, y: np.ndarray
) -> dict[str, Any]:
    """One pass, predict then learn, over the stream: every drift figure and the curve."""
    hits = np.zeros(len(y))
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    for i in range(len(y)):
        label = int(y[i])
        hits[i] = learner.predict_learn(X[i], label) == label
        if (i + 1) % 10_000 == 0:
            print(
                f"    {stream.name}: {i + 1:,}/{len(y):,} ({time.perf_counter() - t0:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    roll = rolling(hits, W)
    at = np.arange(CURVE_EVERY, len(y) + 1, CURVE_EVERY)
    out: dict[str, Any] = {
        "prequential": float(hits.mean()),
        "n": len(y),
        "memory_samples": learner.memory_samples(),
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - cpu0,
        "curve": {"samples": at.tolist(), "rolling": [round(float(v), 4) for v in roll[at - 1]]},
    }
    if stream.drift_at is not None:
        out |= drift_figures(hits, stream.drift_at, stream.width)
    if stream.blocks is not None:
        out |= recurring_figures(hits, stream.blocks)
    return out


def median_recovery(values: Sequence[int | None]) -> int | float | None:
    """The median of recoveries where ``None`` (never) is worse than any number (+inf): ``None``
    when the median is never; an even count's two middle values are averaged."""
    v = sorted(math.inf if x is None else float(x) for x in values)
    if not v:
        raise ValueError("median_recovery: no values; give at least one seed's recovery")
    mid = (v[(len(v) - 1) // 2] + v[len(v) // 2]) / 2
    if math.isinf(mid):
        return None
    return int(mid) if mid.is_integer() else mid


def recovery_range(values: Sequence[int | None]) -> list[int | None]:
    """``[fastest, slowest]``: the fastest is ``None`` if no seed recovered, the slowest ``None``
    (never) if any seed did not."""
    done = [x for x in values if x is not None]
    return [min(done) if done else None, max(done) if len(done) == len(values) else None]


# figures summarised by their median and range; kept per seed with the rest but the curve
MEDIAN = ("prequential", "pre_drift", "post_drift", "dip")
ONCE = ("n", "title", "curve")


def over_seeds(by_seed: Mapping[int, dict[str, Any]]) -> dict[str, Any]:
    """One row from ``run_drift`` results keyed by model seed (see the module's docstring)."""
    if not by_seed:
        raise ValueError("over_seeds: no runs; give at least one seed's run_drift result")
    seeds = sorted(by_seed)
    runs = [by_seed[s] for s in seeds]
    first = runs[0]
    out: dict[str, Any] = {k: first[k] for k in ("n", "title") if k in first}
    out["seeds"] = seeds
    out["memory_samples"] = max(r["memory_samples"] for r in runs)
    out["seconds"] = float(sum(r["seconds"] for r in runs))
    out["cpu_seconds"] = float(sum(r["cpu_seconds"] for r in runs))
    for k in MEDIAN:
        if k in first:
            vals = [float(r[k]) for r in runs]
            out[k] = float(np.median(vals))
            out[f"{k}_range"] = [min(vals), max(vals)]
    if "recovery" in first:
        recs = [r["recovery"] for r in runs]
        out["recovery"] = median_recovery(recs)
        out["recovery_range"] = recovery_range(recs)
        out["recovered"] = sum(v is not None for v in recs)
    if "blocks" in first:
        out["blocks"] = [float(v) for v in np.median([r["blocks"] for r in runs], axis=0)]
    for c in ("concept0", "concept1"):
        if c in first:
            out[c] = {k: float(np.median([r[c][k] for r in runs])) for k in first[c]}
    curves = np.array([r["curve"]["rolling"] for r in runs])
    out["curve"] = {
        "samples": first["curve"]["samples"],
        "rolling": [round(float(v), 4) for v in np.median(curves, axis=0)],
    }
    out["per_seed"] = [
        {"seed": s, **{k: v for k, v in r.items() if k not in ONCE}}
        for s, r in zip(seeds, runs, strict=True)
    ]
    return out
