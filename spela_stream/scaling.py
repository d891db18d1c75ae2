"""A running standardiser (Welford) for raw stream features.

Raw features of mixed scale break SPELA (and backprop): Elec2's raw prices sit near the
majority-class rate without it. The standardiser learns each feature's mean and variance from
the stream itself and is part of the model's state.

>>> s = Standardiser(2)
>>> for row in ([1.0, 10.0], [3.0, 30.0]):
...     s.update(np.array(row))
>>> s.transform(np.array([2.0, 20.0])).tolist()
[0.0, 0.0]
>>> s.transform(np.array([3.0, 30.0])).tolist()
[1.0, 1.0]
"""

from __future__ import annotations

import numpy as np
import torch

TINY_STD = 1e-8


class Standardiser:
    """Per-feature running mean and variance; ``transform`` gives (x - mean) / std, clipped.

    A feature may be missing from a sample (NaN here, the model's mark for a dict key that did not
    come): it is left out of that feature's statistics and standardises to 0, its running mean.
    Each feature counts its own samples, so one that appears mid-stream (``grow``) starts fresh.

    Parameters
    ----------
    n_features
        Width of the vectors.
    clip
        Standardised values are clipped to [-clip, clip]; a feature that was constant until now
        would otherwise explode on its first change. ``None`` disables clipping.
    """

    def __init__(self, n_features: int, clip: float | None = 5.0) -> None:
        self.n_features = n_features
        self.clip = clip
        self.count = 0  # samples folded in
        self.counts = np.zeros(n_features, dtype=np.int64)  # (d,) samples that held the feature
        self.mean = np.zeros(n_features)  # (d,) float64
        self.m2 = np.zeros(n_features)  # (d,) sum of squared deviations
        self._scale: np.ndarray | None = None  # 1 / std (0 for unseen features), until an update

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Standardise a vector (d,) or a batch (B, d) with the statistics seen so far; a missing
        value (NaN) or a feature never seen gives 0."""
        if self.count == 0:
            return np.zeros_like(x, dtype=np.float64)
        if self._scale is None:
            std = np.sqrt(self.m2 / np.maximum(self.counts, 1))
            scale = np.where(std > TINY_STD, 1.0 / np.maximum(std, TINY_STD), 1.0)
            self._scale = np.where(self.counts > 0, scale, 0.0)
        out: np.ndarray = (x - self.mean) * self._scale
        if np.isnan(out).any():
            np.nan_to_num(out, copy=False, nan=0.0)
        if self.clip is not None:
            np.clip(out, -self.clip, self.clip, out=out)
        return out

    def update(self, x: np.ndarray) -> None:
        """Fold one vector (d,) or a batch (B, d) into the statistics (Chan et al.'s merge);
        missing values (NaN) leave their feature's statistics alone."""
        batch = np.atleast_2d(x).astype(np.float64, copy=False)
        nb = batch.shape[0]
        if nb == 0:
            return
        self._scale = None
        self.count += nb
        missing = np.isnan(batch)
        if missing.any():
            self._update_present(batch, ~missing)
            return
        if nb == 1:
            row = batch[0]
            self.counts += 1
            delta = row - self.mean
            self.mean += delta / self.counts
            self.m2 += delta * (row - self.mean)
            return
        b_mean = batch.mean(axis=0)
        b_m2 = ((batch - b_mean) ** 2).sum(axis=0)
        total = self.counts + nb
        delta = b_mean - self.mean
        self.mean = self.mean + delta * (nb / total)
        self.m2 = self.m2 + b_m2 + delta**2 * (self.counts * nb / total)
        self.counts = total

    def _update_present(self, batch: np.ndarray, present: np.ndarray) -> None:
        """Chan's merge per feature, over the rows that hold it: present (B, d) bool."""
        nb = present.sum(axis=0)  # (d,)
        b_mean = np.where(present, batch, 0.0).sum(axis=0) / np.maximum(nb, 1)
        b_m2 = (np.where(present, batch - b_mean, 0.0) ** 2).sum(axis=0)
        total = self.counts + nb
        w = nb / np.maximum(total, 1)  # (d,) the batch's share; 0 where no row held the feature
        delta = b_mean - self.mean
        self.mean = self.mean + delta * w
        self.m2 = self.m2 + b_m2 + delta**2 * (self.counts * w)
        self.counts = total

    def shorten(self, keep: int) -> None:
        """Weigh the statistics as at most ``keep`` samples (the values stay): after a change of
        the stream, new samples then move them as if only ``keep`` had been seen."""
        keep = max(int(keep), 1)
        ratio = np.minimum(keep / np.maximum(self.counts, 1), 1.0)  # (d,)
        self.m2 = self.m2 * ratio
        self.counts = np.minimum(self.counts, keep)
        self.count = min(self.count, keep)
        self._scale = None

    def grow(self, k: int) -> None:
        """Add ``k`` features at the end, with no statistics yet (they standardise to 0)."""
        self.n_features += k
        self.counts = np.concatenate([self.counts, np.zeros(k, dtype=np.int64)])
        self.mean = np.concatenate([self.mean, np.zeros(k)])
        self.m2 = np.concatenate([self.m2, np.zeros(k)])
        self._scale = None

    def state(self) -> dict[str, np.ndarray]:
        """The statistics as arrays (count as a 0-d int64 array; per-feature ``counts`` only
        where some feature has missed a sample)."""
        state = {
            "count": np.asarray(self.count, dtype=np.int64),
            "mean": self.mean.copy(),
            "m2": self.m2.copy(),
        }
        if (self.counts != self.count).any():
            state["counts"] = self.counts.copy()
        return state

    def load(self, state: dict[str, np.ndarray]) -> None:
        """Restore statistics saved by ``state``."""
        self.count = int(state["count"])
        self.mean = np.asarray(state["mean"], dtype=np.float64).copy()
        self.m2 = np.asarray(state["m2"], dtype=np.float64).copy()
        self.n_features = self.mean.shape[0]
        counts = state.get("counts")
        self.counts = (
            np.full(self.n_features, self.count, dtype=np.int64)
            if counts is None
            else np.asarray(counts, dtype=np.int64).copy()
        )
        self._scale = None


class TensorStandardiser:
    """The same running standardiser on torch tensors, for a hidden layer's input on its device.

    SPELA hands each layer the previous layer's LeakyReLU output: non-negative, of drifting scale.
    Standardising it per unit (zero mean, unit variance, running statistics) lets one step size
    serve every layer; this is the "normalise each layer's input" candidate of the core issue.
    Statistics are kept in float64. With ``decay`` the statistics are exponential moving averages
    (bias-corrected) that forget, so the normalisation follows a drifting stream; without it they
    are Welford's equal-weight running mean and variance.
    """

    def __init__(
        self,
        n_features: int,
        device: torch.device | str = "cpu",
        decay: float | None = None,
        slow_decay: float | None = None,
    ) -> None:
        self.decay = decay
        self.slow_decay = slow_decay  # the decay while count < slow_until (see ``slow_down``)
        self.slow_until = 0
        self.weight = 0.0  # the moving averages' total weight, 1 - prod(decays): bias correction
        self.count = 0
        self.mean = torch.zeros(n_features, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(n_features, dtype=torch.float64, device=device)
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None  # mean, 1/std in h's dtype

    def transform(self, h: torch.Tensor) -> torch.Tensor:
        """(h - mean) / std for a batch (B, d), in h's dtype; zeros before any statistics."""
        if self.count == 0:
            return torch.zeros_like(h)
        if self._cache is None or self._cache[0].dtype != h.dtype:
            var = self.variance()
            scale = torch.where(var > TINY_STD**2, var.rsqrt(), 1.0)
            self._cache = (self.mean.to(h.dtype), scale.to(h.dtype))
        mean, scale = self._cache
        return (h - mean) * scale

    def variance(self) -> torch.Tensor:
        """Per-unit variance estimate (d,)."""
        if self.decay is not None:
            return self.m2 / self.weight  # m2 holds the EMA of squares
        return self.m2 / self.count

    def update(self, h: torch.Tensor) -> None:
        """Fold a batch (B, d) into the statistics."""
        batch = h.to(torch.float64)
        nb = batch.shape[0]
        if nb == 0:
            return
        self._cache = None
        if self.decay is not None and nb == 1:  # the per-sample path: a few in-place ops
            beta, row = self._decay_at(self.count), batch[0]
            c0 = self.weight
            c1 = beta * c0 + (1.0 - beta)
            self.mean.mul_(beta * c0 / c1).add_(row, alpha=(1.0 - beta) / c1)
            delta = row - self.mean
            self.m2.mul_(beta).addcmul_(delta, delta, value=1.0 - beta)
            self.weight = c1
            self.count += 1
            return
        if self.decay is not None:
            self._update_ema(batch)
            return
        if nb == 1:
            self.count += 1
            delta = batch[0] - self.mean
            self.mean += delta / self.count
            self.m2 += delta * (batch[0] - self.mean)
            return
        b_mean = batch.mean(dim=0)
        b_m2 = ((batch - b_mean) ** 2).sum(dim=0)
        total = self.count + nb
        delta = b_mean - self.mean
        self.mean += delta * (nb / total)
        self.m2 += b_m2 + delta**2 * (self.count * nb / total)
        self.count = total

    def slow_down(self, samples: int) -> None:
        """Use ``slow_decay`` (when set) for the next ``samples`` updates."""
        if self.slow_decay is not None:
            self.slow_until = self.count + samples

    def _decay_at(self, count: int) -> float:
        assert self.decay is not None
        return self.slow_decay if count < self.slow_until and self.slow_decay else self.decay

    def _update_ema(self, batch: torch.Tensor) -> None:
        # mean holds the bias-corrected EMA mean; m2 the raw EMA of squared deviations from it.
        nb = batch.shape[0]
        betas = torch.tensor(
            [self._decay_at(self.count + i) for i in range(nb)], dtype=torch.float64
        )
        # row i's weight: (1 - beta_i) times the decays of the rows after it (the newest most)
        after = torch.cat(
            [torch.cumprod(betas.flip(0), 0).flip(0)[1:], torch.ones(1, dtype=torch.float64)]
        )
        w = ((1.0 - betas) * after).to(batch.device)  # (B,)
        keep = float(betas.prod())
        c0 = self.weight
        c1 = keep * c0 + float(w.sum())
        raw_mean = torch.mv(batch.T, w).add_(self.mean, alpha=keep * c0)
        self.mean = raw_mean.div_(c1)
        dev = (batch - self.mean).square_()
        self.m2 = torch.mv(dev.T, w).add_(self.m2, alpha=keep)
        self.weight = c1
        self.count += nb

    def state(self) -> dict[str, np.ndarray]:
        """The statistics as numpy arrays (count as a 0-d int64 array)."""
        return {
            "count": np.asarray(self.count, dtype=np.int64),
            "mean": self.mean.cpu().numpy().copy(),
            "m2": self.m2.cpu().numpy().copy(),
            "weight": np.asarray(self.weight, dtype=np.float64),
            "slow_until": np.asarray(self.slow_until, dtype=np.int64),
        }

    def load(self, state: dict[str, np.ndarray]) -> None:
        """Restore statistics saved by ``state`` (one saved without ``weight`` had one decay)."""
        self.count = int(state["count"])
        if "weight" in state:
            self.weight = float(state["weight"])
        elif self.decay is not None:
            self.weight = 1.0 - self.decay**self.count
        self.slow_until = int(state.get("slow_until", 0))
        device = self.mean.device
        self.mean = torch.as_tensor(np.array(state["mean"]), dtype=torch.float64, device=device)
        self.m2 = torch.as_tensor(np.array(state["m2"]), dtype=torch.float64, device=device)
        self._cache = None
