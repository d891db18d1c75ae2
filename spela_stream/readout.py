"""A streaming class-mean readout next to each layer's fixed class vectors (issue 11).

SPELA reads a layer's prediction as the class vector nearest (in cosine) to its output. A class
that arrives mid-stream is only predicted once the layer has learned to point its samples at
that class's vector, which takes tens of samples. A class *mean* of the layer's outputs is usable
after the class's first sample. So every layer also keeps running class means of its own output
and a shared per-unit within-class variance, and scores a sample by the cosine between its
standardised output and each class's standardised mean, both centred on the mean of the class
means (nearest class mean with a diagonal shared covariance: a diagonal streaming LDA).

Both readouts of a layer are scored prequentially on every learned sample; a moving average of
each one's hits picks which one the layer reports (``choose``), so a stream on which the class
vectors are better keeps them.

>>> import numpy as np
>>> r = ClassMeans(2)
>>> r.update(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.2]]), np.array([0, 1, 0]))
>>> r.scores(np.array([[0.9, 0.1]]), 2).round(3).tolist()
[[1.0, -1.0]]
"""

from __future__ import annotations

import numpy as np

from .errors import ModelError

MEAN_WINDOW = 1000  # a class mean averages about its last 1,000 samples (the layer drifts)
VAR_WINDOW = 1000  # the shared within-class variance: about the last 1,000 samples
CHOICE_DECAY = 0.98  # the hit rates that pick a readout average about the last 50 samples
VAR_EPS = 1e-6


class ClassMeans:
    """Running class means of a d-wide output and a shared per-unit within-class variance."""

    def __init__(self, d: int) -> None:
        self.d = d
        self.means = np.zeros((0, d))  # (C, d) float64
        self.counts = np.zeros(0, dtype=np.int64)  # (C,) samples folded in per class
        self.var = np.zeros(d)  # (d,) within-class variance
        self.n = 0

    def grow(self, n_classes: int) -> None:
        extra = n_classes - len(self.counts)
        if extra > 0:
            self.means = np.vstack([self.means, np.zeros((extra, self.d))])
            self.counts = np.concatenate([self.counts, np.zeros(extra, dtype=np.int64)])

    def update(self, h: np.ndarray, k: np.ndarray) -> None:
        """Fold outputs h (B, d) of classes k (B,) in, one at a time (as a stream would)."""
        self.grow(int(k.max()) + 1)
        for row, c in zip(np.asarray(h, dtype=np.float64), k.tolist(), strict=True):
            n_c = self.counts[c] = self.counts[c] + 1
            delta = row - self.means[c]
            self.means[c] += delta / min(n_c, MEAN_WINDOW)
            if n_c > 1:  # a class's first sample has no within-class spread yet
                self.n += 1
                self.var += (delta * (row - self.means[c]) - self.var) / min(self.n, VAR_WINDOW)

    def scores(self, h: np.ndarray, n_classes: int) -> np.ndarray:
        """cos((h - c) / s, (mean_k - c) / s) for the first ``n_classes`` classes: (B, C).

        c is the mean of the known class means, s the within-class standard deviation per unit;
        a class with no sample yet scores -1.
        """
        h = np.asarray(h, dtype=np.float64)
        out = np.full((h.shape[0], n_classes), -1.0)
        c = min(n_classes, len(self.counts))
        seen = np.flatnonzero(self.counts[:c] > 0)
        if seen.size == 0:
            return out
        m = self.means[seen]  # (S, d)
        scale = 1.0 / np.sqrt(self.var + VAR_EPS) if self.n else np.ones(self.d)
        centre = m.mean(axis=0)
        q = (h - centre) * scale  # (B, d)
        p = (m - centre) * scale  # (S, d)
        qn = np.linalg.norm(q, axis=1, keepdims=True)
        pn = np.linalg.norm(p, axis=1)
        cos = (q @ p.T) / np.maximum(qn * pn, 1e-12)
        if seen.size == 1:  # one class: nothing to compare, it is the answer
            cos[:] = 1.0
        out[:, seen] = cos
        return out

    def nbytes(self) -> int:
        return int(self.means.nbytes + self.counts.nbytes + self.var.nbytes)

    def state(self) -> dict[str, np.ndarray]:
        return {
            "means": self.means.copy(),
            "counts": self.counts.copy(),
            "var": self.var.copy(),
            "n": np.array(self.n, dtype=np.int64),
        }

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> ClassMeans:
        means = np.asarray(state["means"], dtype=np.float64)
        counts = np.asarray(state["counts"], dtype=np.int64)
        var = np.asarray(state["var"], dtype=np.float64)
        if means.ndim != 2 or counts.shape != (means.shape[0],) or var.shape != (means.shape[1],):
            raise ModelError(
                f"readout state shapes disagree: means {means.shape}, counts {counts.shape}, "
                f"var {var.shape}"
            )
        r = cls(means.shape[1])
        r.means, r.counts, r.var = means.copy(), counts.copy(), var.copy()
        r.n = int(state["n"])
        return r


class Readout:
    """Every layer's class means, and the running hit rates that choose a readout per layer.

    The variants measured beside this one (means only, the sum of both scores, replays not
    refreshing the means) are in benchmarks/results/continual-research.md, round 4."""

    def __init__(self, widths: tuple[int, ...]) -> None:
        self.layers = [ClassMeans(d) for d in widths]
        self.hits = np.zeros((len(widths), 2))  # moving hit rate of (vectors, means) per layer

    def _chosen(self, i: int, vec: np.ndarray, means: np.ndarray) -> np.ndarray:
        """The readout whose moving hit rate on layer i is the higher (vectors on a tie)."""
        return means if self.hits[i, 1] > self.hits[i, 0] else vec

    def combine(self, i: int, vec: np.ndarray, h: np.ndarray) -> np.ndarray:
        """Layer i's reported scores (B, C) from its class-vector scores and its output h."""
        return self._chosen(i, vec, self.layers[i].scores(h, vec.shape[1]))

    def _hit(self, i: int, vec: np.ndarray, means: np.ndarray, k: np.ndarray) -> None:
        """Fold a batch's hits of both readouts into layer i's moving hit rates."""
        if len(k) == 1:  # one sample: its hit is 0 or 1, as the mean below gives it
            if k[0] < vec.shape[1]:
                for j, s in enumerate((vec, means)):
                    hit = 1.0 if int(s[0].argmax()) == k[0] else 0.0
                    self.hits[i, j] = CHOICE_DECAY * self.hits[i, j] + (1 - CHOICE_DECAY) * hit
            return
        old = k < vec.shape[1]
        if old.any():
            for j, s in enumerate((vec, means)):
                hit = float(np.mean(s[old].argmax(axis=1) == k[old]))
                self.hits[i, j] = CHOICE_DECAY * self.hits[i, j] + (1 - CHOICE_DECAY) * hit

    def learn(self, i: int, vec: np.ndarray | None, h: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Score (prequentially) and learn layer i's batch; returns the reported scores.

        ``vec`` is None when nothing was known before the batch: the means only learn.
        """
        out = vec
        if vec is not None:
            means = self.layers[i].scores(h, vec.shape[1])
            out = self._chosen(i, vec, means)  # before this batch's hits count, as a prediction
            self._hit(i, vec, means, k)
        self.layers[i].update(h, k)
        return out if out is not None else np.zeros((h.shape[0], 0))

    def rehearse(self, i: int, h: np.ndarray, k: np.ndarray) -> None:
        """Fold replayed outputs into their classes' means (old classes' outputs drift)."""
        self.layers[i].update(h, k)

    def nbytes(self) -> int:
        return sum(r.nbytes() for r in self.layers) + int(self.hits.nbytes)

    def state(self) -> dict[str, np.ndarray]:
        state = {"hits": self.hits.copy()}
        for i, r in enumerate(self.layers):
            state |= {f"{i}.{k}": v for k, v in r.state().items()}
        return state

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], widths: tuple[int, ...]) -> Readout:
        r = cls(widths)
        hits = np.asarray(state["hits"], dtype=np.float64)
        if hits.shape != r.hits.shape:
            raise ModelError(f"readout.hits has shape {hits.shape}, expected {r.hits.shape}")
        r.hits = hits.copy()
        r.layers = [
            ClassMeans.from_state(
                {k.removeprefix(f"{i}."): v for k, v in state.items() if k.startswith(f"{i}.")}
            )
            for i in range(len(widths))
        ]
        return r
