"""Class-incremental benchmark: does a one-pass learner keep the classes it learned first?

Protocol (issue 11): the MNIST test set, classes in stages (``--per-stage 2``: 0-1, 2-3, ...;
``1``: one class per stage), each stage's samples in file order; the last 20% of every class is
held out. One pass, prequential (predict, then learn), no task labels or stage boundaries given to
the learner. After every stage a frozen learner is scored on the held-out samples of every class:
the stage x class accuracy matrix gives the final per-class accuracy, average forgetting and
backward transfer (Avalanche / Lopez-Paz: experience k's accuracy right after stage k minus its
accuracy after the last stage, averaged over every stage but the last; BWT is minus that).
Samples-to-80%: for each class first seen after stage 1, the first of its own samples ``j >= 10``
at which its last 10 prequential predictions were >= 80% right (``None``: never).

    nice -n 10 python -m benchmarks.continual --learners spela,spela-m0 --per-stage 2
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from spela_stream.datasets import load_mnist
from spela_stream.model import SpelaMLP

RESULTS = Path(__file__).resolve().parent / "results"
WINDOW = 10  # samples-to-80%: rolling window over the class's own samples


class Learner(Protocol):
    def predict_learn(self, x: np.ndarray, y: int) -> int | None: ...
    def predict(self, X: np.ndarray) -> list[int | None]: ...
    def memory_samples(self) -> int: ...


def class_incremental(
    X: np.ndarray, y: np.ndarray, per_stage: int, held_out: float = 0.2
) -> tuple[list[np.ndarray], dict[int, np.ndarray]]:
    """Stage index arrays (file order inside a stage) and held-out indices per class."""
    classes = sorted(set(y.tolist()))
    train: dict[int, np.ndarray] = {}
    test: dict[int, np.ndarray] = {}
    for c in classes:
        idx = np.flatnonzero(y == c)
        cut = int(round(len(idx) * (1 - held_out)))
        train[c], test[c] = idx[:cut], idx[cut:]
    stages = [
        np.sort(np.concatenate([train[c] for c in classes[i : i + per_stage]]))
        for i in range(0, len(classes), per_stage)
    ]
    return stages, test


def evaluate(
    learner: Learner,
    X: np.ndarray,
    y: np.ndarray,
    per_stage: int,
) -> dict[str, Any]:
    """Run the protocol for one learner; every figure of the table."""
    stages, test = class_incremental(X, y, per_stage)
    classes = sorted(test)
    stage_classes = [sorted(set(y[s].tolist())) for s in stages]
    matrix = np.zeros((len(stages), len(classes)))  # held-out acc after stage s on class c
    correct = 0
    n = 0
    hits: dict[int, list[bool]] = {c: [] for c in classes}
    t0 = time.perf_counter()
    for s, idx in enumerate(stages):
        for i in idx:
            label = int(y[i])
            pred = learner.predict_learn(X[i], label)
            ok = pred == label
            correct += ok
            n += 1
            hits[label].append(bool(ok))
        for c in classes:
            preds = learner.predict(X[test[c]])
            matrix[s, c] = float(np.mean([p == c for p in preds]))
    seconds = time.perf_counter() - t0
    final = matrix[-1]
    all_test = np.concatenate([test[c] for c in classes])
    stage_acc = np.array(
        [
            [matrix[t, stage_classes[k]].mean() if t >= k else np.nan for k in range(len(stages))]
            for t in range(len(stages))
        ]
    )
    forgetting = [stage_acc[k, k] - stage_acc[-1, k] for k in range(len(stages) - 1)]
    to80 = {}
    for c in classes:
        if c in stage_classes[0]:
            continue
        h = np.array(hits[c], dtype=float)
        to80[c] = next(
            (j + 1 for j in range(WINDOW - 1, len(h)) if h[j + 1 - WINDOW : j + 1].mean() >= 0.8),
            None,
        )
    reached = [v for v in to80.values() if v is not None]
    weights = np.array([len(test[c]) for c in classes])
    return {
        "prequential": correct / n,
        "final_heldout": float((final * weights).sum() / weights.sum()),
        "final_per_class": [round(float(v), 4) for v in final],
        "avg_forgetting": float(np.mean(forgetting)),
        "bwt": -float(np.mean(forgetting)),
        "to80_median": float(np.median(reached)) if reached else None,
        "to80_max": (max(reached) if len(reached) == len(to80) else None) if reached else None,
        "to80_never": sum(v is None for v in to80.values()),
        "stage_matrix": [[round(float(v), 4) for v in row] for row in matrix],
        "memory_samples": learner.memory_samples(),
        "seconds": seconds,
        "n_heldout": int(len(all_test)),
    }


# ---------------------------------------------------------------------------- learners


class Spela:
    """SpelaMLP through its public API (predict_learn_one / predict_many)."""

    def __init__(self, **params: Any) -> None:
        self.model = SpelaMLP(**params)

    def predict_learn(self, x: np.ndarray, y: int) -> int | None:
        p = self.model.predict_learn_one(x, y)
        assert p is not None
        return p.label  # type: ignore[return-value]

    def predict(self, X: np.ndarray) -> list[int | None]:
        return self.model.predict_many(X)  # type: ignore[return-value]

    def memory_samples(self) -> int:
        mem = self.model.replay_memory
        return 0 if mem is None else len(mem)


class Backprop:
    """Per-sample SGD backprop MLP (ReLU, cross-entropy, running standardiser clipped at +-5),
    optionally with a class-balanced replay memory of the same budget and replay schedule as
    spela's (every ``every`` samples, a batch of ``every * ratio`` stored samples)."""

    def __init__(
        self,
        d: int,
        n_classes: int,
        hidden: Sequence[int] = (1024, 1024),
        lr: float = 0.01,
        memory: int = 0,
        every: int = 10,
        ratio: float = 1.0,
        seed: int = 0,
    ) -> None:
        from benchmarks.baselines import make_mlp
        from spela_stream.memory import ReplayMemory
        from spela_stream.scaling import Standardiser

        torch.manual_seed(seed)
        self.net = make_mlp(d, hidden, n_classes)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=lr)
        self.scaler = Standardiser(d, clip=5.0)
        self.mem = ReplayMemory(memory, d, seed=seed) if memory else None
        self.every, self.ratio = every, ratio
        self.loss = nn.CrossEntropyLoss()

    def _t(self, X: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(self.scaler.transform(np.atleast_2d(X)), dtype=torch.float32)

    def _step(self, X: np.ndarray, ys: np.ndarray) -> None:
        loss = self.loss(self.net(self._t(X)), torch.as_tensor(ys))
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()

    def predict_learn(self, x: np.ndarray, y: int) -> int | None:
        with torch.no_grad():
            pred = int(self.net(self._t(x)).argmax()) if self.scaler.count else None
        self.scaler.update(x)
        self._step(x, np.array([y]))
        if self.mem is not None:
            self.mem.add(x, y)
            self.mem.pending += 1
            if self.mem.pending >= self.every:
                self.mem.pending = 0
                self._step(*self.mem.sample(int(round(self.every * self.ratio))))
        return pred

    def predict(self, X: np.ndarray) -> list[int | None]:
        with torch.no_grad():
            return self.net(self._t(X)).argmax(dim=1).tolist()

    def memory_samples(self) -> int:
        return 0 if self.mem is None else len(self.mem)


class SLDA:
    """Streaming LDA: running class means and a shared running covariance with shrinkage."""

    def __init__(self, d: int, shrinkage: float = 1e-2, refresh: int = 100) -> None:
        self.d, self.shrink, self.refresh = d, shrinkage, refresh
        self.means: dict[int, np.ndarray] = {}
        self.counts: dict[int, int] = {}
        self.sigma = np.zeros((d, d))
        self.n = 0
        self._W: np.ndarray | None = None
        self._b: np.ndarray | None = None
        self._order: list[int] = []

    def _fit(self) -> None:
        prec = np.linalg.inv((1 - self.shrink) * self.sigma + self.shrink * np.eye(self.d))
        self._order = sorted(self.means)
        M = np.stack([self.means[c] for c in self._order])  # (C, d)
        self._W = M @ prec
        self._b = -0.5 * np.einsum("cd,cd->c", self._W, M)

    def predict(self, X: np.ndarray) -> list[int | None]:
        if not self.means:
            return [None] * len(X)
        if self._W is None:
            self._fit()
        assert self._W is not None and self._b is not None
        scores = np.atleast_2d(X) @ self._W.T + self._b
        return [self._order[i] for i in scores.argmax(axis=1)]

    def predict_learn(self, x: np.ndarray, y: int) -> int | None:
        pred = self.predict(x[None, :])[0]
        x = x.astype(np.float64)
        if y not in self.means:
            self.means[y], self.counts[y] = np.zeros(self.d), 0
            self._W = None
        delta = x - self.means[y]
        self.sigma = (
            self.n * self.sigma + np.outer(delta, delta) * self.counts[y] / (self.counts[y] + 1)
        ) / (self.n + 1)
        self.counts[y] += 1
        self.means[y] += delta / self.counts[y]
        self.n += 1
        if self.n % self.refresh == 0:
            self._W = None
        return pred

    def memory_samples(self) -> int:
        return 0


class RiverSoftmax:
    """River ``StandardScaler() | SoftmaxRegression()`` with defaults."""

    def __init__(self) -> None:
        from river import linear_model, preprocessing

        self.model = preprocessing.StandardScaler() | linear_model.SoftmaxRegression()

    def predict_learn(self, x: np.ndarray, y: int) -> int | None:
        d = dict(enumerate(x.tolist()))
        pred = self.model.predict_one(d)
        self.model.learn_one(d, y)
        return pred  # type: ignore[no-any-return]

    def predict(self, X: np.ndarray) -> list[int | None]:
        return [self.model.predict_one(dict(enumerate(r.tolist()))) for r in X]

    def memory_samples(self) -> int:
        return 0


class NoChange:
    """Predicts the last label seen."""

    def __init__(self) -> None:
        self.last: int | None = None

    def predict_learn(self, x: np.ndarray, y: int) -> int | None:
        pred, self.last = self.last, y
        return pred

    def predict(self, X: np.ndarray) -> list[int | None]:
        return [self.last] * len(X)

    def memory_samples(self) -> int:
        return 0


def learners(d: int, n_classes: int) -> dict[str, Callable[[], Learner]]:
    """Every learner by name (spela variants are ``spela:key=value,key=value``)."""
    return {
        "spela": lambda: Spela(),
        "spela-m0": lambda: Spela(memory=0),
        "backprop": lambda: Backprop(d, n_classes),
        "backprop-replay": lambda: Backprop(d, n_classes, memory=1000),
        "slda": lambda: SLDA(d),
        "river-softmax": lambda: RiverSoftmax(),
        "no-change": lambda: NoChange(),
    }


def make(name: str, d: int, n_classes: int) -> Learner:
    if name.startswith("spela:"):
        params: dict[str, Any] = {}
        for item in name.split(":", 1)[1].split(","):
            key, value = item.split("=")
            params[key] = json.loads(value) if value not in ("None",) else None
        return Spela(**params)
    return learners(d, n_classes)[name]()


def iid(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Prequential accuracy of SpelaMLP(**params) on one shared stream in its published order."""
    from benchmarks.streams import load_stream

    X, y = load_stream(name)
    model = SpelaMLP(**params)
    correct = 0
    t0 = time.perf_counter()
    for row, label in zip(X, y, strict=True):
        p = model.predict_learn_one(row, label)
        correct += p is not None and p.label == label
    seconds = time.perf_counter() - t0
    return {"stream": name, "accuracy": correct / len(y), "seconds": seconds, "n": len(y)}


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--learners", default="spela,spela-m0")
    ap.add_argument("--per-stage", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None, help="append result rows to this file")
    ap.add_argument(
        "--iid",
        default=None,
        help="instead: prequential accuracy on these shared streams (comma-separated), in "
        "stream order, for SpelaMLP with the overrides given as --params JSON",
    )
    ap.add_argument("--params", default="{}", help="JSON overrides of SpelaMLP for --iid")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.iid:
        for stream in args.iid.split(","):
            r = iid(stream, json.loads(args.params))
            print(f"{stream:10s} {args.params} accuracy={r['accuracy']:.4f} n={r['n']}", flush=True)
        return
    X, y = load_mnist(args.limit)
    for name in args.learners.split(";"):
        learner = make(name, X.shape[1], 10)
        r = evaluate(learner, X, y, args.per_stage)
        row = {"learner": name, "per_stage": args.per_stage, **r}
        line = (
            f"{name:40s} per_stage={args.per_stage} preq={r['prequential']:.3f} "
            f"final={r['final_heldout']:.3f} forget={r['avg_forgetting']:.3f} "
            f"to80={r['to80_median']}/{r['to80_max']} never={r['to80_never']} "
            f"mem={r['memory_samples']} {r['seconds']:.0f}s"
        )
        print(line, flush=True)
        print("   per class", r["final_per_class"], file=sys.stderr)
        if args.json:
            with args.json.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
    _ = math


if __name__ == "__main__":
    main()
