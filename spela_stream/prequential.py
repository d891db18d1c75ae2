"""The test-then-train loop: predict each sample, score the prediction, then learn from it.

It yields reports and never prints; the CLI and the benchmarks format them.

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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from river import metrics, utils

from .inputs import Label
from .model import SpelaMLP


@dataclass(frozen=True)
class Report:
    """Where a prequential run stands after ``samples`` samples."""

    samples: int
    scored: int  # samples that had a prediction to score (all but those before the first class)
    accuracy: float
    rolling_accuracy: float
    layer_accuracy: tuple[float, ...]
    last_label: Label | None
    last_prediction: Label | None
    samples_per_s: float
    elapsed_s: float


def prequential(
    model: SpelaMLP,
    stream: Iterable[tuple[Any, Label]],
    *,
    every: int = 1000,
    window: int = 1000,
) -> Iterator[Report]:
    """Run predict -> score -> learn over ``stream``; yield a report every ``every`` samples and
    at the end. Each sample costs one forward pass (``SpelaMLP.predict_learn_one``)."""
    acc = metrics.Accuracy()
    rolling = utils.Rolling(metrics.Accuracy, window_size=window)
    per_layer = [metrics.Accuracy() for _ in model.hidden]
    start = time.perf_counter()
    n = scored = 0
    y = pred = None
    for x, y in stream:
        p = model.predict_learn_one(x, y)
        pred = None if p is None else p.label
        if pred is not None:  # before the first class is known there is nothing to score
            scored += 1
            acc.update(y, pred)
            rolling.update(y, pred)
            assert p is not None
            for m, lab in zip(per_layer, p.layer_labels, strict=False):
                m.update(y, lab)
        n += 1
        if n % every == 0:
            yield _report(n, scored, acc, rolling, per_layer, y, pred, start)
    if n % every:
        yield _report(n, scored, acc, rolling, per_layer, y, pred, start)


def _report(
    n: int,
    scored: int,
    acc: metrics.Accuracy,
    rolling: utils.Rolling[metrics.Accuracy],
    per_layer: list[metrics.Accuracy],
    y: Label | None,
    pred: Label | None,
    start: float,
) -> Report:
    elapsed = time.perf_counter() - start
    return Report(
        samples=n,
        scored=scored,
        accuracy=float(acc.get()),
        rolling_accuracy=float(rolling.get()),  # type: ignore[operator]
        layer_accuracy=tuple(float(m.get()) for m in per_layer),
        last_label=y,
        last_prediction=pred,
        samples_per_s=n / elapsed if elapsed > 0 else 0.0,
        elapsed_s=elapsed,
    )
