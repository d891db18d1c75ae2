"""A forgetting class-mean readout of the raw input, mixed into the last layer's scores (issue 11).

Round 5 (benchmarks/results/continual-research.md) found that a whitened-cosine class-mean
readout of the raw input, with whole-stream statistics, averaged with the last layer's readout,
lifts every class-incremental stream (camera 0.949, MNIST 5x2 0.918) but costs a drifting stream
(Elec2 0.8805 against 0.9314): whole-stream statistics cannot forget. ``InputMeans`` keeps the
same statistics as exponential moving averages over an effective window instead: each class's
mean over about its last ``window`` samples, the shared full within-class covariance over about
the stream's last ``window`` samples; on a detected drift both are shortened to ``DRIFT_KEEP``
samples, so the next ones weigh as much as a fresh start would give them.

A sample scores cos(W (x - c), W (mean_k - c)), W the inverse Cholesky factor of the shrunk
covariance (refitted at 8, 16, ..., 512 samples, then every ``REFIT``), c the mean of the class
means. ``mix`` combines those scores with the layer's: ``"sum"`` (``(1 - w) layer + w input``, the
round-5 rule) or ``"calibrated"`` (the sum of both readouts' log-probabilities, each readout
with a temperature fitted on its own prequential scores, ``calibration.OnlineTemperature``: a
readout that predicts worse on the stream gets flatter probabilities and less say).

>>> import numpy as np
>>> r = InputMeans(2, window=100)
>>> r.update(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.2], [0.1, 0.9]]), np.array([0, 1, 0, 1]))
>>> r.scores(np.array([[0.9, 0.1]]), 2).argmax(axis=1).tolist()
[0]
"""

from __future__ import annotations

import numpy as np

from .calibration import OnlineTemperature
from .errors import ModelError

SHRINK = 0.01  # covariance shrinkage towards (trace / d) I
REFIT = 500  # samples between refits of the whitening, after the early doubling ones
DRIFT_KEEP = 200  # on a detected drift, statistics weigh as if they held this many samples
MIXES = ("sum", "calibrated")
MIX = "calibrated"  # how SpelaMLP(input_readout=...) mixes the readouts (round 6: sum loses Elec2)
WEIGHT = 0.5  # the input readout's weight in the "sum" mix


class InputMeans:
    """Class means and a shared full within-class covariance of the raw input, forgetting."""

    def __init__(self, d: int, window: int | None) -> None:
        self.d = d
        self.window = window  # None: whole-stream statistics (round 5's readout)
        if window is not None and window < 1:
            raise ModelError(f"input readout window must be >= 1 sample or None, got {window}")
        self.means = np.zeros((0, d))
        self.counts = np.zeros(0, dtype=np.int64)  # per class, capped by shorten()
        self.cov = np.zeros((d, d))
        self.n = 0  # within-class deviations folded in (capped by shorten())
        self.seen = 0  # deviations ever seen: the refit clock
        self._pending: list[np.ndarray] = []  # scaled deviations not yet folded into cov
        self._decay = 1.0  # the factor cov takes when the pending rows are folded
        self._g: list[float] = []  # the running decay when each pending row came
        self.white = np.eye(d)  # W: x -> W x whitens
        self.pmeans = np.zeros((0, d))  # W mean_k, kept in step with the means

    def _rate(self, n: int) -> float:
        return 1.0 / (n if self.window is None else min(n, self.window))

    def _grow(self, n_classes: int) -> None:
        extra = n_classes - len(self.counts)
        if extra > 0:
            self.means = np.vstack([self.means, np.zeros((extra, self.d))])
            self.pmeans = np.vstack([self.pmeans, np.zeros((extra, self.d))])
            self.counts = np.concatenate([self.counts, np.zeros(extra, dtype=np.int64)])

    def update(self, x: np.ndarray, k: np.ndarray) -> None:
        """Fold rows x (B, d) of classes k (B,) in, one at a time."""
        self._grow(int(k.max()) + 1)
        for row, c in zip(np.asarray(x, dtype=np.float64), k.tolist(), strict=True):
            n_c = self.counts[c] = self.counts[c] + 1
            a_c = self._rate(int(n_c))
            delta = row - self.means[c]
            self.means[c] += a_c * delta
            self.pmeans[c] += a_c * (self.white @ delta)
            if n_c > 1:
                # cov <- (1 - a) cov + a delta (x - mean_new)^T, and x - mean_new = (1 - a_c) delta
                self.n += 1
                self.seen += 1
                a = self._rate(self.n)
                if a >= 1.0:  # the first deviation (or a window of one): nothing older counts
                    self.cov[:] = 0.0
                    self._pending, self._decay, self._g = [], 1.0, []
                else:
                    self._decay *= 1.0 - a
                # stored against the running decay; _fold weighs row i by decay_end / decay_i
                self._pending.append(np.sqrt(a * (1.0 - a_c)) * delta)
                self._g.append(self._decay)
                if self._due():
                    self.refit()

    def _due(self) -> bool:
        s = self.seen
        return (s < 2 * 512 and s >= 8 and s & (s - 1) == 0) or (s >= 512 and s % REFIT == 0)

    def _fold(self) -> None:
        if self._pending:
            w = np.sqrt(self._decay / np.maximum(np.array(self._g), 1e-300))
            p = np.stack(self._pending) * w[:, None]
            self.cov = self._decay * self.cov + p.T @ p
        elif self._decay != 1.0:
            self.cov = self._decay * self.cov
        self._pending, self._decay, self._g = [], 1.0, []

    def refit(self) -> None:
        """Fold pending deviations in and rebuild the whitening and the whitened means."""
        self._fold()
        tr = float(np.trace(self.cov)) / self.d
        if tr <= 0:
            return
        s = (1.0 - SHRINK) * self.cov + SHRINK * tr * np.eye(self.d)
        chol = np.linalg.cholesky(s)
        self.white = np.linalg.solve(chol, np.eye(self.d))  # L^-1
        self.pmeans = self.means @ self.white.T

    def widen(self, extra: int) -> None:
        """New input columns (dict features): zero means and spread, an unchanged whitening."""
        self._fold()
        d = self.d + extra
        cov, white = np.zeros((d, d)), np.eye(d)
        cov[: self.d, : self.d], white[: self.d, : self.d] = self.cov, self.white
        self.cov, self.white, self.d = cov, white, d
        self.means = np.hstack([self.means, np.zeros((len(self.counts), extra))])
        self.pmeans = self.means @ self.white.T

    def shorten(self, keep: int) -> None:
        """A detected drift: the statistics weigh as if they held at most ``keep`` samples."""
        np.minimum(self.counts, keep, out=self.counts)
        self.n = min(self.n, keep)

    def scores(self, x: np.ndarray, n_classes: int) -> np.ndarray:
        """Whitened centred cosines (B, n_classes); a class with no sample scores -1."""
        x = np.asarray(x, dtype=np.float64)
        out = np.full((x.shape[0], n_classes), -1.0)
        c = min(n_classes, len(self.counts))
        seen = np.flatnonzero(self.counts[:c] > 0)
        if seen.size == 0:
            return out
        p = self.pmeans[seen]
        centre = p.mean(axis=0)
        q = x @ self.white.T - centre
        p = p - centre
        qn = np.linalg.norm(q, axis=1, keepdims=True)
        pn = np.linalg.norm(p, axis=1)
        cos = (q @ p.T) / np.maximum(qn * pn, 1e-12)
        if seen.size == 1:
            cos[:] = 1.0
        out[:, seen] = cos
        return out

    def nbytes(self) -> int:
        arrays = (self.means, self.counts, self.cov, self.white, self.pmeans)
        return int(sum(a.nbytes for a in arrays) + sum(p.nbytes for p in self._pending))

    def state(self) -> dict[str, np.ndarray]:
        self._fold()  # the pending rows live in cov from here on (the whitening is unchanged)
        return {
            "means": self.means.copy(),
            "counts": self.counts.copy(),
            "cov": self.cov.copy(),
            "white": self.white.copy(),
            "pmeans": self.pmeans.copy(),  # as kept in step, not recomputed: a resume is exact
            "n": np.array([self.n, self.seen], dtype=np.int64),
        }

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], window: int | None) -> InputMeans:
        means = np.asarray(state["means"], dtype=np.float64)
        counts = np.asarray(state["counts"], dtype=np.int64)
        cov = np.asarray(state["cov"], dtype=np.float64)
        white = np.asarray(state["white"], dtype=np.float64)
        d = means.shape[1] if means.ndim == 2 else -1
        if counts.shape != (means.shape[0],) or cov.shape != (d, d) or white.shape != (d, d):
            raise ModelError(
                f"input readout state shapes disagree: means {means.shape}, counts "
                f"{counts.shape}, cov {cov.shape}, white {white.shape}"
            )
        r = cls(d, window)
        r.means, r.counts, r.cov, r.white = means.copy(), counts.copy(), cov.copy(), white.copy()
        kept = state.get("pmeans")  # absent in a state saved before it was kept
        r.pmeans = (np.asarray(kept, dtype=np.float64).copy()
                    if kept is not None and np.shape(kept) == means.shape
                    else r.means @ r.white.T)  # fmt: skip
        r.n, r.seen = (int(v) for v in np.asarray(state["n"]).tolist())
        return r


def _log_softmax(scores: np.ndarray, temperature: float) -> np.ndarray:
    z = scores / temperature
    z = z - z.max(axis=1, keepdims=True)
    out: np.ndarray = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return out


class InputReadout:
    """``InputMeans`` of the raw input and the rule mixing its scores with the last layer's."""

    def __init__(self, d: int, window: int | None, mix: str = "sum", weight: float = 0.5) -> None:
        if mix not in MIXES:
            raise ModelError(f"input readout mix {mix!r} is not one of {MIXES}")
        self.means = InputMeans(d, window)
        self.mix = mix
        self.weight = float(weight)
        self.fits = [OnlineTemperature(), OnlineTemperature()]  # (layer, input)

    def combine(self, layer: np.ndarray, x: np.ndarray, default_t: float) -> np.ndarray:
        """The reported scores (B, C) from the layer's scores and the raw input x (B, d)."""
        return self._mix(layer, self.means.scores(x, layer.shape[1]), default_t)

    def _mix(self, layer: np.ndarray, inp: np.ndarray, default_t: float) -> np.ndarray:
        if self.mix == "sum":
            out: np.ndarray = (1.0 - self.weight) * layer + self.weight * inp
            return out
        t_layer, t_in = (f.temperature(default_t) for f in self.fits)
        out = _log_softmax(layer, t_layer) + _log_softmax(inp, t_in)
        return out

    def learn(
        self, layer: np.ndarray | None, x: np.ndarray, k: np.ndarray, default_t: float
    ) -> np.ndarray | None:
        """Score (prequentially, before learning) and learn a batch; None when nothing was known."""
        out = layer  # None, or (B, 0) from the class-means readout: nothing known yet
        if layer is not None and layer.shape[1] > 0:
            inp = self.means.scores(x, layer.shape[1])
            out = self._mix(layer, inp, default_t)
            old = k < layer.shape[1]
            if old.any():
                self.fits[0].update(layer[old], k[old])
                self.fits[1].update(inp[old], k[old])
        self.means.update(x, k)
        return out

    def nbytes(self) -> int:
        return self.means.nbytes() + sum(int(f.nll.nbytes) for f in self.fits)

    def state(self) -> dict[str, np.ndarray]:
        state = dict(self.means.state())
        for i, f in enumerate(self.fits):
            state |= {f"fit{i}.{k}": v for k, v in f.state().items()}
        return state

    @classmethod
    def from_state(
        cls, state: dict[str, np.ndarray], window: int | None, mix: str, weight: float
    ) -> InputReadout:
        r = cls(1, window, mix, weight)
        r.means = InputMeans.from_state(state, window)
        r.fits = [
            OnlineTemperature.from_state(
                {k.removeprefix(f"fit{i}."): v for k, v in state.items() if k[:5] == f"fit{i}."}
            )
            for i in range(2)
        ]
        return r
