"""Prequential metrics on River's objects, per layer, with a state that survives a checkpoint.

One ``Track`` per prediction stream (the reported one, then every layer): a confusion matrix shared
by River's ``Accuracy`` and ``CohenKappa`` (one update feeds both) and a ``utils.Rolling``
accuracy. River's ``ADWIN`` watches the reported error to flag drift as it happens.

State is plain JSON (confusion-matrix cells, window contents, the drift detector's recent input),
so a resumed run reports the numbers an unbroken one would.

>>> from spela_stream.model import Prediction
>>> m = StreamMetrics(n_layers=1, window=2)
>>> for y, p in [(1, 1), (0, 1), (0, 0)]:
...     _ = m.update(y, Prediction(p, 0.9, 0, (p,), (0.9,)), at=0)
>>> round(m.reported.accuracy, 3), m.reported.rolling
(0.667, 0.5)
>>> StreamMetrics.from_state(m.state()).summary() == m.summary()
True
"""

from __future__ import annotations

import base64
from collections import deque
from typing import Any

import numpy as np
from river import drift, metrics, utils

from .errors import ModelError
from .inputs import Label
from .model import Prediction

STATE_FORMAT = "spela-stream.metrics/1"
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
        self._rolling = utils.Rolling(metrics.Accuracy, window_size=window)

    def update(self, y: Label, p: Label) -> None:
        """Count one scored prediction."""
        self.cm.update(y, p)  # feeds both Accuracy and CohenKappa, which share it
        self._rolling.update(y, p)

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
        return float(self._rolling.get())  # type: ignore[operator]

    def classes(self) -> list[Label]:
        """Every label seen as truth or prediction, sorted (by text where types are mixed)."""
        found = list(self.cm.classes)
        try:
            return sorted(found)
        except TypeError:
            return sorted(found, key=lambda c: (type(c).__name__, str(c)))

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
        window = [list(args) for args, _ in self._rolling.window]
        return {"cells": cells, "window": window}

    def load(self, state: dict[str, Any]) -> None:
        """Replay a saved state into fresh River objects (weighted cells, then the window)."""
        for t, p, w in state["cells"]:
            self.cm.update(t, p, w=w)
        # The window's pairs are already in the cells; replay them into the rolling metric only.
        for t, p in state["window"]:
            self._rolling.update(t, p)


class StreamMetrics:
    """Metrics of the reported prediction and of each layer, plus drift on the reported error."""

    def __init__(self, n_layers: int, window: int = 1000, drift_delta: float = 0.002) -> None:
        if window < 1:
            raise ModelError(f"window must be >= 1, got {window}")
        self.window = window
        self.drift_delta = drift_delta
        self.reported = Track(window)
        self.layers = [Track(window) for _ in range(n_layers)]
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
            "layers": [t.summary() for t in self.layers],
            "drifts": len(self.drifts),
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
            "drifts": list(self.drifts),
            "drift_input": {
                "n": int(width),
                "bits": base64.b64encode(np.packbits(recent).tobytes()).decode(),
            },
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> StreamMetrics:
        """Rebuild from ``state()``; the drift detector is rebuilt by replaying its window."""
        if state.get("format") != STATE_FORMAT:
            found = state.get("format")
            raise ModelError(f"metric state format {found!r}, expected {STATE_FORMAT!r}")
        out = cls(len(state["layers"]), window=state["window"], drift_delta=state["drift_delta"])
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
