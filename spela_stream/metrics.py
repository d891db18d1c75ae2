"""Prequential metrics on River's objects, per layer, with a state that survives a checkpoint.

One ``Track`` per prediction stream (the reported one, then every layer): a confusion matrix shared
by River's ``Accuracy`` and ``CohenKappa`` (one update feeds both) and a rolling
accuracy. ``CalibrationError`` (15 bins) scores the reported confidence. River's ``ADWIN``
watches the reported error to flag drift as it happens.
``PerClass`` follows the reported prediction class by class: rolling accuracy over the last
samples *of that class*, cumulative accuracy and count, and forgetting (the best rolling accuracy
the class reached, counted once its window is full, minus its rolling accuracy now).

State is plain JSON (confusion-matrix cells, window contents, the drift detector's recent input),
so a resumed run reports the numbers an unbroken one would.

>>> from spela_stream.model import Prediction
>>> m = StreamMetrics(n_layers=1, window=2)
>>> for y, p in [(1, 1), (0, 1), (0, 0)]:
...     _ = m.update(y, Prediction(p, 0.9, 0, (p,), (0.9,)), at=0)
>>> round(m.reported.accuracy, 3), m.reported.rolling
(0.667, 0.5)
>>> m.per_class.rolling(0), m.per_class.rolling(1)
(0.5, 1.0)
>>> round(m.summary()["ece"], 4)  # 2 of 3 right at confidence 0.9: |2 - 2.7| / 3
0.2333
>>> StreamMetrics.from_state(m.state()).summary() == m.summary()
True
"""

from __future__ import annotations

import base64
from collections import deque
from collections.abc import Iterable
from typing import Any

import numpy as np
from river import drift, metrics

from .calibration import CalibrationError
from .errors import ModelError
from .inputs import Label
from .model import Prediction

STATE_FORMAT = "spela-stream.metrics/3"
# /1: before per-class figures, /2: before the calibration error; those count from the resume
OLD_FORMATS = ("spela-stream.metrics/1", "spela-stream.metrics/2")
# Samples of one class in its rolling window: a figure within about 4 points (one standard error
# at 80% accuracy) that still follows a class which arrives a few dozen times (a camera session).
CLASS_WINDOW = 100
# ADWIN keeps no state we can read (it is compiled), so a checkpoint keeps its recent input and a
# resume replays it. Its window rarely outgrows this; beyond it the replay starts later.
DRIFT_MEMORY = 1 << 17


class Track:
    """Cumulative accuracy, Cohen's kappa and rolling accuracy of one stream of predictions."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.cm = metrics.ConfusionMatrix()
        self._acc = metrics.Accuracy(cm=self.cm)
        self._kappa = metrics.CohenKappa(cm=self.cm)
        # The last ``window`` (truth, prediction) pairs; their accuracy is counted when read, so a
        # sample costs an append, not River's Rolling update and revert of a second matrix.
        self._window: deque[tuple[Label, Label]] = deque(maxlen=window)

    def update(self, y: Label, p: Label) -> None:
        """Count one scored prediction."""
        self.cm.update(y, p)  # feeds both Accuracy and CohenKappa, which share it
        self._window.append((y, p))

    @property
    def n(self) -> int:
        """Predictions scored."""
        return int(self.cm.total_weight)

    @property
    def accuracy(self) -> float:
        return float(self._acc.get())

    @property
    def kappa(self) -> float:
        return float(self._kappa.get())

    @property
    def rolling(self) -> float:
        window = self._window
        return sum(t == p for t, p in window) / len(window) if window else 0.0

    def classes(self) -> list[Label]:
        """Every label seen as truth or prediction, sorted (by text where types are mixed)."""
        return _sorted(self.cm.classes)

    def recall(self) -> dict[Label, float]:
        """Per-class recall (the diagonal over the row sums)."""
        out: dict[Label, float] = {}
        for c in self.classes():
            row = self.cm.sum_row[c]
            out[c] = float(self.cm.data[c][c] / row) if row else 0.0
        return out

    def confusion(self) -> tuple[list[Label], list[list[int]]]:
        """Classes and the confusion matrix as counts (rows: truth, columns: prediction)."""
        classes = self.classes()
        return classes, [[int(self.cm.data[t][p]) for p in classes] for t in classes]

    def summary(self) -> dict[str, float | int]:
        return {
            "n": self.n,
            "accuracy": self.accuracy,
            "kappa": self.kappa,
            "rolling": self.rolling,
        }

    def state(self) -> dict[str, Any]:
        cells = [[t, p, w] for t, row in self.cm.data.items() for p, w in row.items() if w]
        window = [[t, p] for t, p in self._window]
        return {"cells": cells, "window": window}

    def load(self, state: dict[str, Any]) -> None:
        """Replay a saved state into fresh River objects (weighted cells, then the window)."""
        for t, p, w in state["cells"]:
            self.cm.update(t, p, w=w)
        # The window's pairs are already in the cells; replay them into the rolling metric only.
        self._window.extend((t, p) for t, p in state["window"])


class PerClass:
    """Per-class rolling accuracy (last ``window`` samples of the class), cumulative accuracy and
    count, and forgetting, of one prediction stream. O(1) per sample: only the true class moves.

    A class's best rolling accuracy is taken only once its window is full (``window`` samples of
    it), so a lucky first few samples do not count as something to forget. Forgetting is that best
    minus the rolling accuracy now, so never negative; a class whose window never filled has none.
    A class that stops arriving keeps its last rolling figure: in a stream, forgetting shows when
    an old class comes back; a held-out stream (``eval``) scores every class now.

    >>> pc = PerClass(window=2)
    >>> for y, ok in [("a", True), ("a", True), ("b", False), ("a", False), ("a", False)]:
    ...     pc.update(y, ok)
    >>> pc.rolling("a"), pc.best("a"), pc.forgetting("a"), pc.forgetting("b")
    (0.0, 1.0, 1.0, None)
    """

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ModelError(f"per-class window must be >= 1, got {window}")
        self.window = window
        self.n: dict[Label, int] = {}  # samples of the class scored
        self.correct: dict[Label, int] = {}
        self._recent: dict[Label, deque[bool]] = {}  # the last ``window`` outcomes of the class
        self._hits: dict[Label, int] = {}  # sum of ``_recent[c]``
        self._best: dict[Label, int] = {}  # most hits in a full window so far

    def update(self, y: Label, correct: bool) -> None:
        """Count one scored sample of class ``y``."""
        recent = self._recent.get(y)
        if recent is None:
            recent = self._recent[y] = deque(maxlen=self.window)
            self.n[y] = self.correct[y] = self._hits[y] = 0
        hits = self._hits[y] - (recent[0] if len(recent) == self.window else 0)
        recent.append(correct)
        hits += correct
        self._hits[y] = hits
        self.n[y] += 1
        self.correct[y] += correct
        if len(recent) == self.window and hits > self._best.get(y, -1):
            self._best[y] = hits

    def classes(self) -> list[Label]:
        """Every class scored, sorted (by text where types are mixed)."""
        return _sorted(self.n)

    def rolling(self, y: Label) -> float:
        """Accuracy over the class's last ``window`` samples (fewer while it has fewer)."""
        return self._hits[y] / len(self._recent[y])

    def accuracy(self, y: Label) -> float:
        """Accuracy over every sample of the class."""
        return self.correct[y] / self.n[y]

    def best(self, y: Label) -> float | None:
        """The best rolling accuracy of a full window, or None before the window has filled."""
        best = self._best.get(y)
        return None if best is None else best / self.window

    def forgetting(self, y: Label) -> float | None:
        """Best rolling accuracy minus the rolling accuracy now (None before a full window)."""
        best = self._best.get(y)
        return None if best is None else (best - self._hits[y]) / self.window

    def forgotten(self) -> list[tuple[Label, float]]:
        """``(class, forgetting)`` of every class with a full window, sorted by class."""
        out = []
        for c in self.classes():
            f = self.forgetting(c)
            if f is not None:
                out.append((c, f))
        return out

    def average_forgetting(self) -> float | None:
        """Mean forgetting over the classes with a full window (None when there are none)."""
        found = self.forgotten()
        return sum(f for _, f in found) / len(found) if found else None

    def worst(self) -> tuple[Label, float] | None:
        """The class that has forgotten most, with its forgetting (the first by label on a tie)."""
        found = self.forgotten()
        return max(found, key=lambda cf: cf[1]) if found else None

    def figures(self, recall: dict[Label, float]) -> dict[Label, dict[str, float | None]]:
        """Per class: rolling, best and forgetting, and ``drop`` = best minus ``recall`` (scored
        now on a held-out stream: forgetting as it sees it, generalisation gap included)."""
        out: dict[Label, dict[str, float | None]] = {}
        for c in self.classes():
            best = self.best(c)
            drop = None if best is None or c not in recall else best - recall[c]
            out[c] = {"rolling": self.rolling(c), "best": best,
                      "forgetting": self.forgetting(c), "drop": drop}  # fmt: skip
        return out

    def summary(self) -> dict[str, Any]:
        """Average forgetting and the worst class, JSON-able (the worst as ``[label, value]``)."""
        worst = self.worst()
        return {
            "forgetting": self.average_forgetting(),
            "worst_class": None if worst is None else list(worst),
            "classes": len(self.n),
        }

    def state(self) -> dict[str, Any]:
        """Per class ``[label, n, correct, best hits or None, window length, window bits]``."""
        rows = []
        for c in self.classes():
            recent = np.array(self._recent[c], dtype=bool)
            bits = base64.b64encode(np.packbits(recent).tobytes()).decode()
            rows.append([c, self.n[c], self.correct[c], self._best.get(c), len(recent), bits])
        return {"window": self.window, "classes": rows}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PerClass:
        """Rebuild from ``state()``."""
        out = cls(int(state["window"]))
        for c, n, correct, best, length, bits in state["classes"]:
            packed = np.frombuffer(base64.b64decode(bits), dtype=np.uint8)
            recent = np.unpackbits(packed, count=int(length)).astype(bool).tolist()
            out._recent[c] = deque(recent, maxlen=out.window)
            out._hits[c] = sum(recent)
            out.n[c], out.correct[c] = int(n), int(correct)
            if best is not None:
                out._best[c] = int(best)
        return out


def _sorted(found: Iterable[Label]) -> list[Label]:
    """Labels sorted, by type name and text where types are mixed."""
    labels = list(found)
    try:
        return sorted(labels)
    except TypeError:
        return sorted(labels, key=lambda c: (type(c).__name__, str(c)))


class StreamMetrics:
    """Metrics of the reported prediction and of each layer, per class of the reported one, plus
    drift on the reported error. ``class_window`` defaults to ``min(window, CLASS_WINDOW)``."""

    def __init__(
        self,
        n_layers: int,
        window: int = 1000,
        drift_delta: float = 0.002,
        class_window: int | None = None,
    ) -> None:
        if window < 1:
            raise ModelError(f"window must be >= 1, got {window}")
        self.window = window
        self.drift_delta = drift_delta
        self.reported = Track(window)
        self.per_class = PerClass(
            min(window, CLASS_WINDOW) if class_window is None else class_window
        )
        self.layers = [Track(window) for _ in range(n_layers)]
        self.calibration = CalibrationError()  # of the reported confidence
        self.detector = drift.ADWIN(delta=drift_delta)
        self._errors: deque[bool] = deque(maxlen=DRIFT_MEMORY)
        self.drifts: list[int] = []  # sample counts at which drift was flagged

    def update(self, y: Label, p: Prediction, at: int) -> bool:
        """Score one prediction of sample number ``at``; True when ADWIN flags a drift."""
        if p.label is None:
            return False
        self.reported.update(y, p.label)
        for track, label in zip(self.layers, p.layer_labels, strict=False):
            if label is not None:
                track.update(y, label)
        error = p.label != y
        self.per_class.update(y, not error)
        self.calibration.update(p.confidence, not error)
        self._errors.append(error)
        self.detector.update(float(error))
        if self.detector.drift_detected:
            self.drifts.append(at)
            return True
        return False

    def summary(self) -> dict[str, Any]:
        """The latest figures as a small JSON-able dict."""
        return {
            **self.reported.summary(),
            "ece": self.calibration.get(),
            "layers": [t.summary() for t in self.layers],
            "drifts": len(self.drifts),
            **self.per_class.summary(),
        }

    def state(self) -> dict[str, Any]:
        """Everything needed to go on counting, as JSON values."""
        width = min(int(self.detector.width), len(self._errors))
        recent = np.array(list(self._errors)[len(self._errors) - width :], dtype=bool)
        return {
            "format": STATE_FORMAT,
            "window": self.window,
            "drift_delta": self.drift_delta,
            "reported": self.reported.state(),
            "layers": [t.state() for t in self.layers],
            "per_class": self.per_class.state(),
            "calibration": self.calibration.state(),
            "drifts": list(self.drifts),
            "drift_input": {
                "n": int(width),
                "bits": base64.b64encode(np.packbits(recent).tobytes()).decode(),
            },
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> StreamMetrics:
        """Rebuild from ``state()``; the drift detector is rebuilt by replaying its window."""
        found = state.get("format")
        if found != STATE_FORMAT and found not in OLD_FORMATS:
            raise ModelError(f"metric state format {found!r}, expected {STATE_FORMAT!r}")
        out = cls(len(state["layers"]), window=state["window"], drift_delta=state["drift_delta"])
        if "per_class" in state:
            out.per_class = PerClass.from_state(state["per_class"])
        if "calibration" in state:
            out.calibration = CalibrationError.from_state(state["calibration"])
        out.reported.load(state["reported"])
        for track, s in zip(out.layers, state["layers"], strict=True):
            track.load(s)
        out.drifts = [int(a) for a in state["drifts"]]
        n = int(state["drift_input"]["n"])
        packed = np.frombuffer(base64.b64decode(state["drift_input"]["bits"]), dtype=np.uint8)
        for bit in np.unpackbits(packed, count=n).astype(bool).tolist():
            out._errors.append(bit)
            out.detector.update(float(bit))
        return out
