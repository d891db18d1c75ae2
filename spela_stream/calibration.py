"""Confidence calibrated on the stream, and how well it is: expected calibration error.

SPELA's scores are cosines; ``softmax(cos / temperature)`` with one fixed temperature is far from
calibrated (issue 13: on Elec2 the wrong predictions had a median confidence of 0.963).
``OnlineTemperature`` fits the temperature of one prediction stream online, on the prequential
predictions themselves: it keeps the negative log-likelihood of every sample scored so far under
each of a fixed grid of temperatures, as exponentially decayed sums (so it follows a drifting
stream), and reports the grid's minimiser, refined by a parabola through its neighbours in log
temperature. Deterministic, no step size to tune, and its whole state is one small array.

``CalibrationError`` is the metric: confidences in equal-width bins, ECE = the count-weighted mean
of |accuracy - mean confidence| over the bins (Guo et al. 2017).

>>> t = OnlineTemperature()
>>> rng = np.random.default_rng(0)
>>> right = [bool(rng.random() < 0.7) for _ in range(500)]
>>> for ok in right:  # two classes, cosines 0.9 and 0.7: the top one is right 66% of the time
...     t.update(np.array([[0.9, 0.7]] if ok else [[0.7, 0.9]]), np.array([0]))
>>> T = t.temperature(0.1)
>>> round(T, 3), round(1 / (1 + math.exp(-0.2 / T)), 3), sum(right) / 500  # confidence = rate
(0.291, 0.665, 0.662)
>>> e = CalibrationError()
>>> for conf, right in [(0.9, True), (0.9, False), (0.6, True)]:
...     e.update(conf, right)
>>> round(e.get(), 4)  # (|1 - 1.8| + |1 - 0.6|) / 3
0.4
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import ModelError

GRID = np.geomspace(0.003, 10.0, 49)  # (G,) temperatures tried, about 18% apart
DECAY = 0.999  # per scored sample: the fit follows about the last 1,000 predictions
MIN_SAMPLES = 20  # before this many scored predictions the model's own temperature holds
ECE_BINS = 15
LOG_GRID = [math.log(t) for t in GRID.tolist()]  # log of each grid temperature, as temperature()
LOG_STEP = math.log(GRID[1] / GRID[0])


class OnlineTemperature:
    """The temperature that minimises the recent negative log-likelihood of one stream."""

    def __init__(self, decay: float = DECAY) -> None:
        self.decay = decay
        self.nll = np.zeros(len(GRID))  # (G,) decayed sums of -log p(true class)
        self.n = 0  # samples fitted
        # (n, temperature) the compiled update found for nll at n samples (compiled); None: fit
        self.fitted: tuple[int, float] | None = None

    def update(self, scores: np.ndarray, k: np.ndarray) -> None:
        """Fold predictions in: scores (B, C) of the known classes, true class indices k (B,)."""
        if len(k) == 1:  # one sample: the same reductions on (G, C), without the batch axis
            z1 = scores[0].astype(np.float64)[None, :] / GRID[:, None]  # (G, C)
            top1 = z1.max(axis=1, keepdims=True)
            lse1 = np.log(np.exp(z1 - top1).sum(axis=1)) + top1[:, 0]  # (G,)
            self.nll *= self.decay
            self.nll += lse1 - z1[:, int(k[0])]
            self.n += 1
            return
        z = scores.astype(np.float64)[:, None, :] / GRID[None, :, None]  # (B, G, C)
        top = z.max(axis=2, keepdims=True)
        lse = np.log(np.exp(z - top).sum(axis=2)) + top[:, :, 0]  # (B, G)
        nll = lse - np.take_along_axis(z, k[:, None, None], axis=2)[:, :, 0]
        for row in nll:  # in stream order, so a batch folds as its samples one by one would
            self.nll *= self.decay
            self.nll += row
        self.n += len(k)

    def temperature(self, default: float) -> float:
        """The fitted temperature (``default`` until ``MIN_SAMPLES`` have been fitted)."""
        if self.n < MIN_SAMPLES:
            return default
        fitted = self.fitted
        if fitted is not None and fitted[0] == self.n:  # found by the compiled update
            return fitted[1]
        i = int(self.nll.argmin())
        if i == 0 or i == len(GRID) - 1:
            return float(GRID[i])
        lo, mid, hi = self.nll[i - 1 : i + 2].tolist()
        curve = lo - 2 * mid + hi
        shift = 0.5 * (lo - hi) / curve if curve > 0 else 0.0  # in grid steps, within +-0.5
        return math.exp(LOG_GRID[i] + shift * LOG_STEP)

    def state(self) -> dict[str, np.ndarray]:
        """The fit as arrays."""
        return {"nll": self.nll.copy(), "n": np.asarray(self.n, dtype=np.int64)}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> OnlineTemperature:
        """Rebuild a fit saved by ``state``."""
        out = cls()
        nll = np.asarray(state["nll"], dtype=np.float64)
        if nll.shape != GRID.shape:
            raise ModelError(f"calibration state holds {nll.shape} sums, expected {GRID.shape}")
        out.nll = nll.copy()
        out.n = int(state["n"])
        return out


class CalibrationError:
    """Expected calibration error of a stream of (confidence, correct) pairs, binned."""

    def __init__(self, bins: int = ECE_BINS) -> None:
        self.bins = bins
        self.count = np.zeros(bins, dtype=np.int64)  # (bins,)
        self.confidence = np.zeros(bins)  # (bins,) summed confidence
        self.correct = np.zeros(bins, dtype=np.int64)  # (bins,) right predictions

    def update(self, confidence: float, correct: bool) -> None:
        """Count one scored prediction."""
        b = min(int(confidence * self.bins), self.bins - 1)
        self.count[b] += 1
        self.confidence[b] += confidence
        self.correct[b] += bool(correct)

    def get(self) -> float:
        """ECE: sum over bins of |correct - confidence| / all counted (0 before any)."""
        n = int(self.count.sum())
        if n == 0:
            return 0.0
        return float(np.abs(self.correct - self.confidence).sum() / n)

    def state(self) -> dict[str, Any]:
        """The bins as JSON values."""
        return {
            "bins": self.bins,
            "count": self.count.tolist(),
            "confidence": self.confidence.tolist(),
            "correct": self.correct.tolist(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> CalibrationError:
        """Rebuild from ``state()``."""
        out = cls(int(state["bins"]))
        out.count = np.asarray(state["count"], dtype=np.int64)
        out.confidence = np.asarray(state["confidence"], dtype=np.float64)
        out.correct = np.asarray(state["correct"], dtype=np.int64)
        return out
