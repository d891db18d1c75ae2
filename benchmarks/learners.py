"""Every learner of the suite behind one small interface, so one loop drives them all.

A learner sees a stream of ``(x, y)`` with ``x`` a float32 numpy vector and ``y`` a class index
(``0..K-1`` in order of first appearance). ``predict_learn(x, y)`` returns the prediction made
*before* learning the sample (``None`` or ``-1`` when it has nothing to predict from), then learns
it: test-then-train. Micro-batch learners implement ``predict_learn_many`` instead; the whole
batch is predicted before any of it is learned.

Libraries are imported inside the factories: the deep-river learner runs in a virtualenv of its
own that holds neither spela-stream nor this project's River, and a peer that is not installed
must only fail its own jobs.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["LEARNERS", "Spec", "build", "spec"]


@dataclass(frozen=True)
class Spec:
    """One learner of the suite: a name, its family, how it is configured, and the package it
    needs (``peer``: ``None`` for what the project installs anyway)."""

    name: str
    family: str
    config: str
    peer: str | None = None
    batch: int = 1
    params: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------- standardiser


class Standardiser:
    """Running per-feature mean and variance (Welford) in float64: what the backprop, deep-river
    and linear/kNN learners see. Predictions use the statistics before the sample."""

    def __init__(self, d: int) -> None:
        self.n = 0
        self.mean = np.zeros(d)
        self.m2 = np.zeros(d)
        self.scale = np.zeros(d)

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) * self.scale).astype(np.float32)

    def update(self, x: np.ndarray) -> None:
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)
        var = self.m2 / self.n
        self.scale = np.where(var > 0, 1.0 / np.sqrt(var + 1e-8), 0.0)


# ---------------------------------------------------------------------------- spela-stream


class Spela:
    """spela-stream's ``SpelaMLP`` with its defaults (but for ``hidden``), one forward pass per
    sample through ``predict_learn_one``; keeps every layer's prediction and confidence so the
    suite can report per-layer accuracy and what early exit would have done."""

    def __init__(self, d: int, n_classes: int, hidden: Sequence[int] | None = None, **kw: Any):
        from spela_stream import SpelaMLP

        self.model = SpelaMLP(**({"hidden": tuple(hidden)} if hidden else {}), **kw)
        self.layer_labels: list[tuple[int, ...]] = []
        self.layer_conf: list[tuple[float, ...]] = []

    def predict_learn(self, x: np.ndarray, y: int) -> int | None:
        p = self.model.predict_learn_one(x, y)
        assert p is not None
        self.layer_labels.append(p.layer_labels)  # type: ignore[arg-type]
        self.layer_conf.append(p.layer_confidences)
        return p.label  # type: ignore[return-value]

    def predict_learn_many(self, X: np.ndarray, y: Sequence[int]) -> list[int | None]:
        ps = self.model.predict_learn_many(X, list(y))
        assert ps is not None
        for p in ps:
            self.layer_labels.append(p.layer_labels)  # type: ignore[arg-type]
            self.layer_conf.append(p.layer_confidences)
        return [p.label for p in ps]  # type: ignore[misc]

    def nbytes(self) -> int:
        return int(self.model.nbytes())


# ---------------------------------------------------------------------------- torch backprop


class Backprop:
    """Per-sample (batch 1) SGD MLP in torch: Linear+ReLU layers of the given widths, softmax
    cross-entropy, PyTorch's default init, running standardiser in front. The output layer is
    sized for every class of the stream up front (an advantage a true online learner lacks)."""

    def __init__(self, d: int, n_classes: int, hidden: Sequence[int], lr: float, seed: int = 0):
        import torch
        from torch import nn

        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        width = d
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, n_classes))
        self.torch = torch
        self.net = nn.Sequential(*layers)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=lr)
        self.loss = nn.CrossEntropyLoss()
        self.scaler = Standardiser(d)

    def predict_learn(self, x: np.ndarray, y: int) -> int | None:
        torch = self.torch
        with torch.no_grad():
            pred = int(self.net(torch.from_numpy(self.scaler.transform(x))[None, :]).argmax())
        self.scaler.update(x)
        xt = torch.from_numpy(self.scaler.transform(x))[None, :]
        loss = self.loss(self.net(xt), torch.tensor([y]))
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return pred

    def nbytes(self) -> int:
        return sum(p.element_size() * p.nelement() for p in self.net.parameters())


# ---------------------------------------------------------------------------- deep-river


class DeepRiver:
    """deep-river's ``classification.zoo.MultiLayerPerceptron`` (its ready-made per-sample MLP:
    ``n_layers`` hidden ReLU layers of ``n_width``, softmax cross-entropy), with River's
    ``StandardScaler`` in front as its documentation does; River dict input. Its output is sized
    for every class of the stream up front, as the torch baseline's is."""

    def __init__(self, d: int, n_classes: int, n_width: int, n_layers: int, **kw: Any):
        import torch
        from deep_river.classification.zoo import MultiLayerPerceptron
        from river import preprocessing

        torch.manual_seed(0)
        self.scaler = preprocessing.StandardScaler()
        self.model = MultiLayerPerceptron(
            n_features=d,
            n_width=n_width,
            n_layers=n_layers,
            n_init_classes=max(n_classes, 2),
            seed=0,
            **kw,
        )

    def predict_learn(self, x: np.ndarray, y: int) -> int | None:
        xd = dict(enumerate(x.tolist()))
        self.scaler.learn_one(xd)
        xs = self.scaler.transform_one(xd)
        pred = self.model.predict_one(xs)
        self.model.learn_one(xs, y)
        # an output unit of a class not yet seen answers "Unobserved<k>": wrong, like None
        return pred if isinstance(pred, int) else None

    def nbytes(self) -> int | None:
        module = getattr(self.model, "module", None)
        if module is None:
            return None
        return sum(p.element_size() * p.nelement() for p in module.parameters())


# ---------------------------------------------------------------------------- River


class RiverModel:
    """A River classifier fed ``{index: value}`` dicts (building them is inside the timed loop)."""

    def __init__(self, d: int, n_classes: int, kind: str, scale: bool):
        from river import forest, linear_model, neighbors, preprocessing, tree

        makers: dict[str, Callable[[], Any]] = {
            "softmax": linear_model.SoftmaxRegression,
            "hoeffding": tree.HoeffdingTreeClassifier,
            "arf": lambda: forest.ARFClassifier(seed=0),
            "knn": neighbors.KNNClassifier,
        }
        model = makers[kind]()
        self.model = (preprocessing.StandardScaler() | model) if scale else model

    def predict_learn(self, x: np.ndarray, y: int) -> int | None:
        xd = dict(enumerate(x.tolist()))
        pred = self.model.predict_one(xd)
        self.model.learn_one(xd, y)
        return None if pred is None else int(pred)

    def nbytes(self) -> int:
        return len(pickle.dumps(self.model))


# ---------------------------------------------------------------------------- Vowpal Wabbit


class Vowpal:
    """Vowpal Wabbit's one-against-all reduction (``--oaa K``, so it is told the number of classes
    up front), its default adaptive, normalised updates on raw features in namespace ``f``. VW's
    ``learn`` makes its prediction before the update (its progressive validation), which is
    test-then-train."""

    def __init__(self, d: int, n_classes: int, args: str):
        from vowpalwabbit import Workspace

        self.args = f"--oaa {n_classes} {args} --quiet --random_seed 0"
        self.vw = Workspace(self.args)

    def predict_learn(self, x: np.ndarray, y: int) -> int | None:
        nz = np.flatnonzero(x)
        line = f"{y + 1} |f " + " ".join(f"{j}:{x[j]:.6g}" for j in nz.tolist())
        ex = self.vw.parse(line)
        self.vw.learn(ex)
        pred = ex.get_multiclass_prediction()
        self.vw.finish_example(ex)
        return int(pred) - 1

    def nbytes(self) -> int:
        import os
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.vw")
            self.vw.save(path)
            return os.path.getsize(path)


# ---------------------------------------------------------------------------- MOA (CapyMOA)


class Moa:
    """A MOA learner through CapyMOA (Java behind JPype, in this process), fed instances of a
    ``NumpyStream`` schema that lists the stream's classes up front (MOA needs them)."""

    def __init__(self, d: int, n_classes: int, kind: str):
        from capymoa import classifier
        from capymoa.stream import NumpyStream

        X0 = np.zeros((n_classes, d))
        self.stream = NumpyStream(X0, np.arange(n_classes), target_type="categorical")
        self.schema = self.stream.get_schema()
        makers: dict[str, Callable[[], Any]] = {
            "knn": lambda: classifier.KNN(self.schema),
            "hoeffding": lambda: classifier.HoeffdingTree(self.schema),
            "arf": lambda: classifier.AdaptiveRandomForestClassifier(self.schema, random_seed=0),
        }
        self.model = makers[kind]()
        from capymoa.core import LabeledInstance

        self._instance = LabeledInstance.from_array

    def predict_learn(self, x: np.ndarray, y: int) -> int | None:
        inst = self._instance(self.schema, x.astype(np.float64), y)
        pred = self.model.predict(inst)
        self.model.train(inst)
        return None if pred is None else int(pred)

    def nbytes(self) -> int | None:
        learner = getattr(self.model, "moa_learner", None)
        try:
            size = int(learner.measureByteSize()) if learner is not None else 0
        except Exception:  # noqa: BLE001 - not every MOA learner can measure itself
            return None
        return size if size > 0 else None  # 0 without MOA's sizeofag Java agent: unknown


# ---------------------------------------------------------------------------- the roster

_SPELA_CFG = "SpelaMLP defaults (lr 10, standardiser, hidden-unit normalisation)"
LEARNERS: tuple[Spec, ...] = (
    Spec("spela 2x1024", "spela-stream", _SPELA_CFG, params={"hidden": [1024, 1024]}),
    Spec("spela 1x1024", "spela-stream", _SPELA_CFG, params={"hidden": [1024]}),
    Spec(
        "spela 2x1024 mb32",
        "spela-stream",
        _SPELA_CFG + ", micro-batch 32",
        batch=32,
        params={"hidden": [1024, 1024]},
    ),
    Spec(
        "spela 1x1024 mb32",
        "spela-stream",
        _SPELA_CFG + ", micro-batch 32",
        batch=32,
        params={"hidden": [1024]},
    ),
    Spec(
        "backprop 2x1024",
        "torch backprop",
        "SGD batch 1, ReLU, softmax, best lr of grid",
        params={"hidden": [1024, 1024]},
    ),
    Spec(
        "backprop 1x1024",
        "torch backprop",
        "SGD batch 1, ReLU, softmax, best lr of grid",
        params={"hidden": [1024]},
    ),
    Spec(
        "deep-river MLP 2x1024",
        "deep-river",
        "MultiLayerPerceptron(n_width=1024, n_layers=2, adam, lr 1e-3), StandardScaler",
        peer="deep-river",
        params={"n_width": 1024, "n_layers": 2, "optimizer_fn": "adam", "lr": 1e-3},
    ),
    Spec(
        "deep-river MLP 1x1024",
        "deep-river",
        "MultiLayerPerceptron(n_width=1024, n_layers=1, adam, lr 1e-3), StandardScaler",
        peer="deep-river",
        params={"n_width": 1024, "n_layers": 1, "optimizer_fn": "adam", "lr": 1e-3},
    ),
    Spec(
        "River SoftmaxRegression",
        "River",
        "StandardScaler | SoftmaxRegression()",
        params={"kind": "softmax", "scale": True},
    ),
    Spec(
        "River HoeffdingTree",
        "River",
        "HoeffdingTreeClassifier(), raw input",
        params={"kind": "hoeffding", "scale": False},
    ),
    Spec(
        "River ARF",
        "River",
        "ARFClassifier(seed=0) (10 trees), raw input",
        params={"kind": "arf", "scale": False},
    ),
    Spec(
        "River kNN",
        "River",
        "StandardScaler | KNNClassifier() (defaults)",
        params={"kind": "knn", "scale": True},
    ),
    Spec("VW --oaa", "Vowpal Wabbit", "--oaa K", peer="vowpalwabbit", params={"args": ""}),
    Spec(
        "VW --oaa -q ff",
        "Vowpal Wabbit",
        "--oaa K -q ff",
        peer="vowpalwabbit",
        params={"args": "-q ff"},
    ),
    Spec(
        "VW --oaa --nn 64",
        "Vowpal Wabbit",
        "--oaa K --nn 64",
        peer="vowpalwabbit",
        params={"args": "--nn 64"},
    ),
    Spec(
        "MOA kNN",
        "MOA (CapyMOA)",
        "KNN(schema) defaults (k 3, window 1000)",
        peer="capymoa",
        params={"kind": "knn"},
    ),
    Spec(
        "MOA HoeffdingTree",
        "MOA (CapyMOA)",
        "HoeffdingTree(schema) defaults",
        peer="capymoa",
        params={"kind": "hoeffding"},
    ),
    Spec(
        "MOA ARF",
        "MOA (CapyMOA)",
        "AdaptiveRandomForestClassifier(schema) defaults",
        peer="capymoa",
        params={"kind": "arf"},
    ),
)


def spec(name: str) -> Spec:
    for s in LEARNERS:
        if s.name == name:
            return s
    raise KeyError(f"unknown learner {name!r}; choose from {', '.join(s.name for s in LEARNERS)}")


def build(s: Spec, d: int, n_classes: int, extra: dict[str, Any] | None = None) -> Any:
    """A fresh learner for a stream of ``d`` features and ``n_classes`` classes."""
    params = {**s.params, **(extra or {})}
    family = s.family
    if family == "spela-stream":
        return Spela(d, n_classes, **params)
    if family == "torch backprop":
        return Backprop(d, n_classes, **params)
    if family == "deep-river":
        return DeepRiver(d, n_classes, **params)
    if family == "River":
        return RiverModel(d, n_classes, **params)
    if family == "Vowpal Wabbit":
        return Vowpal(d, n_classes, **params)
    if family == "MOA (CapyMOA)":
        return Moa(d, n_classes, **params)
    raise KeyError(family)
