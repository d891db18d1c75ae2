"""Prequential baselines: per-sample backprop MLP (torch) and River softmax regression.

Protocol (test-then-train, one pass, stream order): for each sample, predict, score the prediction,
then learn from the sample. Accuracy is the fraction of correct predictions over the whole stream,
the first sample included.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "RunningStandardiser",
    "best_backprop",
    "class_index",
    "make_mlp",
    "prequential_backprop",
    "prequential_river_softmax",
    "throughput_backprop",
]

DEFAULT_GRID: tuple[float, ...] = (0.003, 0.01, 0.03, 0.1)


class RunningStandardiser:
    """Per-feature running mean/variance (Welford), float64 state.

    ``transform`` returns float32 ``(x - mean) / sqrt(var + eps)`` with the population variance of
    the samples seen so far; a feature whose variance is still zero (or that has no samples yet)
    maps to 0.
    """

    def __init__(self, n_features: int, eps: float = 1e-8) -> None:
        self.n = 0
        self.eps = eps
        self.mean = np.zeros(n_features, dtype=np.float64)
        self.m2 = np.zeros(n_features, dtype=np.float64)
        self._scale = np.zeros(n_features, dtype=np.float64)  # 1/sqrt(var+eps), 0 if var == 0
        self._buf = np.empty(n_features, dtype=np.float64)

    def update(self, x: np.ndarray) -> None:
        self.n += 1
        delta = np.subtract(x, self.mean, out=self._buf)
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)
        var = self.m2 / self.n
        np.divide(1.0, np.sqrt(var + self.eps), out=self._scale)
        self._scale[var <= 0.0] = 0.0

    def transform(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Standardise ``x`` with the current statistics; write into ``out`` (float32) if given."""
        z = (x - self.mean) * self._scale
        if out is None:
            return z.astype(np.float32)
        out[...] = z
        return out


def class_index(y: Sequence[Hashable]) -> tuple[np.ndarray, list[Hashable]]:
    """Map labels to ``0..C-1`` in order of first appearance; returns (indices, classes)."""
    index: dict[Hashable, int] = {}
    idx = np.empty(len(y), dtype=np.int64)
    for i, label in enumerate(y):
        idx[i] = index.setdefault(label, len(index))
    return idx, list(index)


def make_mlp(d_in: int, hidden: Sequence[int], n_classes: int) -> nn.Sequential:
    """``Linear`` layers with ReLU between them (PyTorch default init); logits out."""
    layers: list[nn.Module] = []
    width = d_in
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, n_classes))
    return nn.Sequential(*layers)


def prequential_backprop(
    X: np.ndarray,
    y: Sequence[Hashable],
    hidden: Sequence[int] = (1024,),
    lr: float = 0.01,
    seed: int = 0,
) -> dict[str, Any]:
    """Per-sample (batch size 1) SGD backprop MLP with softmax/cross-entropy, prequentially.

    Inputs are standardised by a :class:`RunningStandardiser`: the prediction uses the statistics
    before the sample, learning updates them with the sample first. Classes are indexed in order of
    first appearance. The output layer is allocated up front for the total number of distinct labels
    in ``y`` -- knowledge a true online learner does not have; this can only favour the baseline.
    Runs single-threaded; ``samples_per_s`` is the wall clock of the whole predict+learn loop.
    """
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    X = np.asarray(X, dtype=np.float32)
    n, d = X.shape
    targets_np, classes = class_index(y)
    targets = torch.from_numpy(targets_np)
    target_ints: list[int] = targets_np.tolist()
    model = make_mlp(d, hidden, len(classes))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    scaler = RunningStandardiser(d)
    buf = np.empty((1, d), dtype=np.float32)
    xt = torch.from_numpy(buf)  # shares memory with buf
    correct = 0
    t0 = time.perf_counter()
    for i in range(n):
        x = X[i]
        scaler.transform(x, out=buf[0])
        with torch.no_grad():
            pred = int(model(xt).argmax())
        correct += pred == target_ints[i]
        scaler.update(x)
        scaler.transform(x, out=buf[0])
        loss = loss_fn(model(xt), targets[i : i + 1])
        opt.zero_grad()
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - t0
    return {
        "accuracy": correct / n if n else float("nan"),
        "samples_per_s": n / seconds if seconds > 0 else float("nan"),
        "seconds": seconds,
        "n": n,
        "lr": lr,
        "hidden": tuple(hidden),
    }


def best_backprop(
    X: np.ndarray,
    y: Sequence[Hashable],
    hidden: Sequence[int],
    grid: Sequence[float] = DEFAULT_GRID,
    seed: int = 0,
) -> dict[str, Any]:
    """Run :func:`prequential_backprop` for each learning rate in ``grid``.

    Returns the result dict of the most accurate learning rate, with an extra key ``"grid"``
    holding the result dicts of every learning rate (in grid order). Picking the best rate in
    hindsight favours the baseline.
    """
    results = [prequential_backprop(X, y, hidden=hidden, lr=lr, seed=seed) for lr in grid]
    best = max(results, key=lambda r: r["accuracy"])
    return {**best, "grid": results}


def prequential_river_softmax(X: np.ndarray, y: Sequence[Hashable]) -> dict[str, Any]:
    """River ``StandardScaler() | SoftmaxRegression()`` (defaults), predict_one then learn_one.

    Features are passed as ``{i: value}`` dicts; building them is inside the timed loop. A
    ``None`` prediction (nothing learnt yet) counts as wrong.
    """
    from river import linear_model, preprocessing

    model = preprocessing.StandardScaler() | linear_model.SoftmaxRegression()
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    correct = 0
    t0 = time.perf_counter()
    for i in range(n):
        x = dict(enumerate(X[i].tolist()))
        label = y[i]
        correct += bool(model.predict_one(x) == label)
        model.learn_one(x, label)
    seconds = time.perf_counter() - t0
    return {
        "accuracy": correct / n if n else float("nan"),
        "samples_per_s": n / seconds if seconds > 0 else float("nan"),
        "seconds": seconds,
        "n": n,
    }


def throughput_backprop(
    d_in: int = 784,
    hidden: Sequence[int] = (1024, 1024),
    n_classes: int = 10,
    n: int = 2000,
    seed: int = 0,
    lr: float = 0.01,
) -> float:
    """Per-sample learning throughput (samples/s) of the backprop MLP, learn step only.

    Uses random standard-normal inputs and random labels, one thread, batch size 1; the timed loop
    is forward, loss, zero_grad, backward, step (no prediction, no standardisation).
    """
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 1, d_in, generator=gen)
    targets = torch.randint(0, n_classes, (n, 1), generator=gen)
    model = make_mlp(d_in, hidden, n_classes)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    for i in range(n):
        loss = loss_fn(model(X[i]), targets[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - t0
    return n / seconds
