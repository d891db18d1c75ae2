"""The test-then-train loop: predict each sample, score the prediction, then learn from it.

The only place that sequences predict, score, learn and checkpoint. It yields reports and never
prints; the CLI, the benchmarks and the services format them. Checkpoints are a callback, so the
core knows no SQLite.

>>> from spela_stream.datasets import iter_mnist
>>> from spela_stream.model import SpelaMLP
>>> reports = list(prequential(SpelaMLP(hidden=(64,)), iter_mnist(200), every=100))
>>> [r.samples for r in reports]
[100, 200]
>>> 0.3 < reports[-1].accuracy <= 1.0
True
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from .errors import InputError
from .inputs import Label
from .metrics import StreamMetrics
from .model import Prediction, SpelaMLP
from .stopping import Interrupted, StopGuard

LOOP_FORMAT = "spela-stream.loop/1"
# History rows carry per-class rolling accuracy for at most this many classes (the ones that have
# forgotten most), so a run over many labels does not grow each checkpoint's history by kilobytes.
CLASSES_PER_ROW = 32
__all__ = [
    "CheckpointPolicy",
    "Delayed",
    "Interrupted",
    "Prequential",
    "Report",
    "StopGuard",
    "prequential",
]


@dataclass(frozen=True)
class Report:
    """Where a prequential run stands after ``samples`` samples."""

    samples: int  # samples seen by the run, a resumed run's earlier ones included
    scored: int  # labelled samples that had a prediction to score
    accuracy: float
    rolling_accuracy: float
    layer_accuracy: tuple[float, ...]
    last_label: Label | None
    last_prediction: Label | None
    samples_per_s: float  # in this process, since it started
    elapsed_s: float
    kappa: float = 0.0
    layer_rolling: tuple[float, ...] = ()
    learned: int = 0
    rejected: int = 0  # bad records skipped (``on_error`` skip)
    drifts: int = 0
    drift: bool = False  # a drift was flagged since the previous recorded report (table row)
    position: int = 0  # records consumed from the source, bad ones included
    where: str = ""
    model_bytes: int = 0
    # Per class of the reported prediction, as [label, value] pairs sorted by label: rolling
    # accuracy over the class's last samples, and forgetting where the class's window has filled.
    class_rolling: tuple[tuple[Label, float], ...] = ()
    class_forgetting: tuple[tuple[Label, float], ...] = ()
    forgetting: float | None = None  # average over class_forgetting; None before any full window
    worst_class: Label | None = None  # the class with the most forgetting
    worst_forgetting: float | None = None


@dataclass
class CheckpointPolicy:
    """When to call ``save``: every ``every`` samples and/or every ``seconds`` of wall time."""

    save: Callable[[Prequential], object]
    every: int | None = None
    seconds: float | None = None
    _last_samples: int = field(default=0, init=False)
    _last_time: float = field(default_factory=time.monotonic, init=False)
    _last_mark: tuple[int, int, int] = field(default=(0, 0, 0), init=False)

    def due(self, samples: int) -> bool:
        """True when an interval has passed since the last checkpoint."""
        if self.every is not None and samples - self._last_samples >= self.every:
            return True
        return self.seconds is not None and time.monotonic() - self._last_time >= self.seconds

    def due_idle(self, loop: Prequential) -> bool:
        """Due, and the loop has changed since the last checkpoint: a quiet stream (a service
        with no clients) is not checkpointed again and again."""
        return _mark(loop) != self._last_mark and self.due(loop.samples)

    def __call__(self, loop: Prequential) -> object:
        """Save now (whatever the intervals say); returns what ``save`` returned."""
        saved = self.save(loop)
        self._last_samples = loop.samples
        self._last_time = time.monotonic()
        self._last_mark = _mark(loop)
        return saved


def _mark(loop: Prequential) -> tuple[int, int, int]:
    """What changes whenever the loop's state does (delayed labels learn without a new sample)."""
    return loop.samples, loop.learned, loop.rejected


@dataclass(frozen=True)
class Delayed:
    """A label that arrived after its sample was predicted: learn ``x`` with ``y`` and score the
    prediction made for it back then (``Prequential.settle``)."""

    x: Any
    y: Label
    prediction: Prediction
    where: str = ""
    id: str | None = None


class Prequential:
    """A model, its metrics and the count of what it has seen: predict -> score -> learn.

    ``learn=False`` scores without learning (``eval``). The loop's ``state()`` (counts, position,
    metric state) goes into a checkpoint beside the model's; ``resumed`` rebuilds it.
    """

    def __init__(
        self,
        model: SpelaMLP,
        *,
        window: int = 1000,
        learn: bool = True,
        metrics: StreamMetrics | None = None,
    ) -> None:
        self.model = model
        self.learn = learn
        self.metrics = metrics or StreamMetrics(model.depth, window=window)
        self.samples = self.learned = self.rejected = self.position = 0
        self.where = ""
        self.history: list[dict[str, Any]] = []  # report and drift rows not yet checkpointed
        self.last: tuple[Label | None, Prediction | None] = (None, None)
        self._drift_since_report = False
        self._start = time.perf_counter()
        self._start_samples = 0

    # ------------------------------------------------------------------ one sample

    def step(
        self, x: Any, y: Label | None, index: int | None = None, where: str = ""
    ) -> Prediction:
        """Predict ``x``; if ``y`` is given score the prediction and (when learning) learn it."""
        model = self.model
        try:
            if y is None:
                p = model.predict_explain_one(x)
            elif self.learn:
                learned = model.predict_learn_one(x, y)
                assert learned is not None  # predict=True always returns the prediction
                p = learned
                self.learned += 1
            else:
                p = model.predict_layers_one(x)  # every layer, for per-layer scores
        except InputError as exc:  # the model is unchanged; say where the sample came from
            if where:
                raise type(exc)(f"{where}: {exc}") from None
            raise
        self.samples += 1
        self.position = self.position + 1 if index is None else index + 1
        self.where = where
        if y is not None and self.metrics.update(y, p, at=self.samples):
            self._drift_since_report = True
            self.history.append({"samples": self.samples, "kind": "drift"})
        self.last = (y, p)
        return p

    def reject(self, index: int, where: str = "") -> None:
        """Count a bad record that was skipped, so the position moves past it."""
        self.rejected += 1
        self.position = index + 1
        self.where = where

    def settle(self, x: Any, y: Label, prediction: Prediction, where: str = "") -> Prediction:
        """A delayed label: score ``prediction`` (made for ``x`` when it arrived, unlabelled)
        against ``y``, then learn ``(x, y)``. The sample was counted when it was predicted, so
        ``samples`` stays; ``learned`` counts it now. Returns the scored prediction."""
        if self.learn:
            try:
                self.model.learn_one(x, y)
            except InputError as exc:  # the model and the metrics are unchanged
                if where:
                    raise type(exc)(f"{where}: {exc}") from None
                raise
            self.learned += 1
        if self.metrics.update(y, prediction, at=self.samples):
            self._drift_since_report = True
            self.history.append({"samples": self.samples, "kind": "drift"})
        self.last = (y, prediction)
        return prediction

    # ------------------------------------------------------------------ the loop

    def run(
        self,
        stream: Iterable[Any],
        *,
        every: int = 1000,
        doubling: bool = False,
        limit: int | None = None,
        checkpoint: CheckpointPolicy | None = None,
        guard: StopGuard | None = None,
        on_step: Callable[[Any, Prediction], None] | None = None,
        on_error: Callable[[Any, InputError], None] | None = None,
    ) -> Iterator[Report]:
        """Step through ``stream`` (``Sample``s or ``(x, y)`` pairs), yielding a report every
        ``every`` samples, at each doubling of the count if ``doubling``, and at the end.

        Stops early once the run has seen ``limit`` samples in all. ``checkpoint`` is called when
        due; the caller writes the final one.

        For a live stream (a socket service): a ``Delayed`` item settles a late label; a ``None``
        item says the stream is waiting, a moment to honour a signal or a timed checkpoint.
        ``on_step(item, prediction)`` hears every prediction as it is made; with ``on_error``,
        a sample the model refuses (``InputError``, model unchanged) goes there and the run goes
        on, instead of the error ending it.
        """
        reported = self._start_samples = self.samples
        self._start = time.perf_counter()  # rates count this run's work, not the setup before it
        if limit is not None and self.samples >= limit:
            return
        for item in stream:
            if item is None:
                if guard is not None:
                    guard.check()
                if checkpoint is not None and checkpoint.due_idle(self):
                    checkpoint(self)
                continue
            try:
                with guard.busy() if guard is not None else nullcontext():
                    if isinstance(item, tuple):
                        p = self.step(item[0], item[1])
                    elif isinstance(item, Delayed):
                        p = self.settle(item.x, item.y, item.prediction, item.where)
                    else:
                        p = self.step(item.x, item.y, item.index, item.where)
                    if on_step is not None:
                        on_step(item, p)
            except InputError as exc:
                if on_error is None:
                    raise
                on_error(item, exc)
                if guard is not None:
                    guard.check()
                continue
            if guard is not None:
                guard.check()
            if isinstance(item, Delayed):  # no new sample: only a checkpoint may be due
                if checkpoint is not None and checkpoint.due_idle(self):
                    checkpoint(self)
                continue
            n = self.samples
            if n % every == 0 or (doubling and n & (n - 1) == 0):
                reported = n
                yield self.report(record=True)
            if limit is not None and n >= limit:
                break
            if checkpoint is not None and checkpoint.due(n):
                checkpoint(self)
        if self.samples != reported:
            yield self.report(record=True)

    def report(self, record: bool = False) -> Report:
        """The figures now; ``record`` also appends them to the history kept for plots."""
        m = self.metrics
        elapsed = time.perf_counter() - self._start
        y, p = self.last
        pc = m.per_class
        worst = pc.worst()
        r = Report(
            samples=self.samples,
            scored=m.reported.n,
            accuracy=m.reported.accuracy,
            rolling_accuracy=m.reported.rolling,
            layer_accuracy=tuple(t.accuracy for t in m.layers),
            last_label=y,
            last_prediction=None if p is None else p.label,
            samples_per_s=(self.samples - self._start_samples) / elapsed if elapsed > 0 else 0.0,
            elapsed_s=elapsed,
            kappa=m.reported.kappa,
            layer_rolling=tuple(t.rolling for t in m.layers),
            learned=self.learned,
            rejected=self.rejected,
            drifts=len(m.drifts),
            drift=self._drift_since_report,
            position=self.position,
            where=self.where,
            model_bytes=self.model.nbytes(),
            class_rolling=tuple((c, pc.rolling(c)) for c in pc.classes()),
            class_forgetting=tuple(pc.forgotten()),
            forgetting=pc.average_forgetting(),
            worst_class=None if worst is None else worst[0],
            worst_forgetting=None if worst is None else worst[1],
        )
        if record:  # a live-line look must not consume the drift mark the next row shows
            self._drift_since_report = False
            self.history.append(
                {
                    "samples": r.samples,
                    "kind": "report",
                    "accuracy": r.accuracy,
                    "rolling": r.rolling_accuracy,
                    "kappa": r.kappa,
                    "layer_accuracy": list(r.layer_accuracy),
                    "layer_rolling": list(r.layer_rolling),
                    **_class_row(r),
                }
            )
        return r

    # ------------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        """The loop's counts and metric state as JSON (the model's state is saved beside it)."""
        return {
            "format": LOOP_FORMAT,
            "samples": self.samples,
            "learned": self.learned,
            "rejected": self.rejected,
            "position": self.position,
            "where": self.where,
            "metrics": self.metrics.state(),
            "summary": self.metrics.summary(),
        }

    def pop_history(self) -> list[dict[str, Any]]:
        """Hand over the history rows gathered since the last call."""
        rows, self.history = self.history, []
        return rows

    @classmethod
    def resumed(cls, model: SpelaMLP, state: dict[str, Any], *, learn: bool = True) -> Prequential:
        """Continue counting where a checkpointed loop stopped."""
        loop = cls(model, learn=learn, metrics=StreamMetrics.from_state(state["metrics"]))
        loop.samples = loop._start_samples = int(state["samples"])
        loop.learned = int(state["learned"])
        loop.rejected = int(state["rejected"])
        loop.position = int(state["position"])
        loop.where = str(state["where"])
        return loop


def _class_row(r: Report) -> dict[str, Any]:
    """The per-class part of a history row: forgetting, and rolling accuracy of at most
    ``CLASSES_PER_ROW`` classes (those that forgot most, then the first by label), 4 decimals."""
    rolling = r.class_rolling
    if len(rolling) > CLASSES_PER_ROW:
        forgot = dict(r.class_forgetting)
        order = sorted(range(len(rolling)), key=lambda i: -forgot.get(rolling[i][0], -1.0))
        rolling = tuple(rolling[i] for i in sorted(order[:CLASSES_PER_ROW]))
    return {
        "forgetting": r.forgetting,
        "worst_class": r.worst_class,
        "class_rolling": [[c, round(v, 4)] for c, v in rolling],
        "classes": len(r.class_rolling),
    }


def prequential(
    model: SpelaMLP,
    stream: Iterable[Any],
    *,
    every: int = 1000,
    window: int = 1000,
) -> Iterator[Report]:
    """Run predict -> score -> learn over ``stream``; yield a report every ``every`` samples and
    at the end. Each sample costs one forward pass (``SpelaMLP.predict_learn_one``)."""
    yield from Prequential(model, window=window).run(stream, every=every)
