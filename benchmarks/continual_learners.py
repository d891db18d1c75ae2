"""The continual benchmark's learners, behind one small interface (``benchmarks.continual``).

``predict_learn(x, y)`` predicts, then learns (test-then-train); ``predict(X)`` scores a frozen
learner on many rows; ``memory_samples()`` is how many input vectors it stores (a replay memory,
kNN's window). Class labels are ``0..C-1``.

``make(name, d, n_classes, seed)`` builds one with model seed ``seed`` (its initial weights, its
memory's and ARF's sampling; the stream is not touched). ``seeded(name)`` says whether the seed
matters: SLDA, River's SoftmaxRegression and kNN and no-change have none (deterministic), so one
run of them is every seed's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from spela_stream.features import FRAME_MODEL_DEFAULTS
from spela_stream.model import SpelaMLP


class Learner(Protocol):
    def predict_learn(self, x: np.ndarray, y: int) -> int | None: ...
    def predict(self, X: np.ndarray) -> list[int | None]: ...
    def memory_samples(self) -> int: ...


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


class River:
    """A River classifier: ``softmax`` (StandardScaler | SoftmaxRegression()), ``arf``
    (ARFClassifier(seed=seed), raw input) or ``knn`` (StandardScaler | KNNClassifier(), its window
    of 1,000 samples), each with River's defaults, as the suite configures them (``seed`` is
    ARF's; the other two have none)."""

    def __init__(self, kind: str, seed: int = 0) -> None:
        from river import forest, linear_model, neighbors, preprocessing

        if kind == "softmax":
            self.model: Any = preprocessing.StandardScaler() | linear_model.SoftmaxRegression()
        elif kind == "arf":
            self.model = forest.ARFClassifier(seed=seed)
        elif kind == "knn":
            self.knn = neighbors.KNNClassifier()
            self.model = preprocessing.StandardScaler() | self.knn
        else:
            raise KeyError(kind)
        self.kind = kind

    def predict_learn(self, x: np.ndarray, y: int) -> int | None:
        d = dict(enumerate(x.tolist()))
        pred = self.model.predict_one(d)
        self.model.learn_one(d, y)
        return None if pred is None else int(pred)

    def predict(self, X: np.ndarray) -> list[int | None]:
        preds = [self.model.predict_one(dict(enumerate(r.tolist()))) for r in X]
        return [None if p is None else int(p) for p in preds]

    def memory_samples(self) -> int:
        return int(self.knn.engine.maxlen) if self.kind == "knn" else 0


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


def learners(d: int, n_classes: int, seed: int = 0) -> dict[str, Callable[[], Learner]]:
    """Every learner by name (spela variants are ``spela:key=value,key=value``), those with a
    seed (``SEEDED``) built with ``seed``."""
    return {
        "spela": lambda: Spela(seed=seed),
        "spela-m0": lambda: Spela(memory=0, seed=seed),
        # what `learn --source camera...` builds: one layer of 1024, input readout 2,000
        "spela-frames": lambda: Spela(**{**FRAME_MODEL_DEFAULTS, "seed": seed}),
        "backprop": lambda: Backprop(d, n_classes, seed=seed),
        "backprop-replay": lambda: Backprop(d, n_classes, memory=1000, seed=seed),
        "slda": lambda: SLDA(d),
        "river-softmax": lambda: River("softmax"),
        "arf": lambda: River("arf", seed=seed),
        "knn": lambda: River("knn"),
        "no-change": lambda: NoChange(),
    }


# the learners whose figures depend on the model seed (the others are deterministic)
SEEDED = frozenset({"spela", "spela-m0", "spela-frames", "backprop", "backprop-replay", "arf"})


def _variant(name: str) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in name.split(":", 1)[1].split(","):
        key, value = item.split("=")
        params[key] = json.loads(value) if value not in ("None",) else None
    return params


def seeded(name: str) -> bool:
    """Whether ``name``'s figures depend on the model seed (a spela variant that fixes its own
    ``seed=`` does not take another)."""
    if name.startswith("spela:"):
        return "seed" not in _variant(name)
    return name in SEEDED


def make(name: str, d: int, n_classes: int, seed: int = 0) -> Learner:
    if name.startswith("spela:"):
        return Spela(**{"seed": seed, **_variant(name)})
    return learners(d, n_classes, seed)[name]()
