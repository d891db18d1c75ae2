"""The test-then-train loop: report cadence, counts, and accuracies that match a manual loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from spela_stream.datasets import iter_mnist
from spela_stream.model import SpelaMLP
from spela_stream.prequential import Report, prequential


def _model(**kw: Any) -> SpelaMLP:
    return SpelaMLP(**{"hidden": (16, 8), "lr": 10.0, "capacity": 16, "seed": 0, **kw})


@pytest.mark.parametrize(
    ("n", "every", "expected"),
    [(250, 100, [100, 200, 250]), (200, 100, [100, 200]), (7, 10, [7]), (5, 1, [1, 2, 3, 4, 5])],
)
def test_reports_every_n_and_at_the_end(
    blobs: Callable[..., Any], n: int, every: int, expected: list[int]
) -> None:
    X, y = blobs(n=n, d=4)
    reports = list(prequential(_model(), zip(X, y, strict=True), every=every))
    assert [r.samples for r in reports] == expected
    for r in reports:
        assert isinstance(r, Report)
        assert 0.0 <= r.accuracy <= 1.0 and 0.0 <= r.rolling_accuracy <= 1.0
        assert len(r.layer_accuracy) == 2
        assert all(0.0 <= a <= 1.0 for a in r.layer_accuracy)
        assert r.samples_per_s >= 0.0 and r.elapsed_s >= 0.0
    assert reports[-1].last_label == y[-1]


def test_empty_stream_yields_nothing() -> None:
    assert list(prequential(_model(), iter([]), every=10)) == []


def test_model_learns_every_sample(blobs: Callable[..., Any]) -> None:
    X, y = blobs(n=120, d=4)
    model = _model()
    list(prequential(model, zip(X, y, strict=True), every=50))
    assert model.n_learned == 120


@pytest.mark.parametrize("depth", [1, 3])
def test_accuracies_match_a_manual_predict_then_learn_loop(
    blobs: Callable[..., Any], depth: int
) -> None:
    X, y = blobs(n=300, d=5, classes=4, seed=1)
    hidden = (16, 16, 16)[:depth]
    reports = list(prequential(_model(hidden=hidden), zip(X, y, strict=True), every=100, window=50))
    manual = _model(hidden=hidden)
    hits, layer_hits = [], []
    p = None
    for x, label in zip(X, y, strict=True):
        p = manual.predict_layers_one(x)
        if p.label is not None:
            hits.append(p.label == label)
            layer_hits.append([lab == label for lab in p.layer_labels])
        manual.learn_one(x, label)
    last = reports[-1]
    assert len(last.layer_accuracy) == depth
    assert last.accuracy == pytest.approx(np.mean(hits))
    assert last.rolling_accuracy == pytest.approx(np.mean(hits[-50:]))
    assert last.layer_accuracy == pytest.approx(tuple(np.mean(layer_hits, axis=0)))
    assert p is not None and last.last_prediction == p.label and last.last_label == y[-1]
    # Measured at lr 10: 0.916 (depth 1) and 0.849 (depth 3, layers 0.916/0.910/0.849);
    # chance is 0.25.
    assert last.accuracy > 0.7


def test_mnist_stream_with_reports() -> None:
    reports = list(prequential(_model(hidden=(64,)), iter_mnist(600), every=200))
    assert [r.samples for r in reports] == [200, 400, 600]
    assert all(r.last_label in range(10) and r.last_prediction in range(10) for r in reports)
    # Measured 0.676 after 600 digits at lr 10 (chance 0.10); 0.60 leaves margin across machines.
    assert reports[-1].accuracy > 0.60


def test_scored_counts_samples_with_a_prediction() -> None:
    reports = list(prequential(_model(hidden=(16,)), iter_mnist(300), every=100))
    # Only the first sample comes before any class is known.
    assert [(r.samples, r.scored) for r in reports] == [(100, 99), (200, 199), (300, 299)]
