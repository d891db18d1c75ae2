"""Stream metrics: River's figures per layer, drift flags, and a JSON state that resumes exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
from river import metrics

from spela_stream.errors import ModelError
from spela_stream.metrics import StreamMetrics, Track
from spela_stream.model import Prediction


def _pred(label: object, layers: tuple[object, ...]) -> Prediction:
    return Prediction(label, 0.5, len(layers) - 1, layers, (0.5,) * len(layers))  # type: ignore[arg-type]


def test_track_matches_river_metrics_updated_separately() -> None:
    rng = np.random.default_rng(0)
    ys = rng.integers(0, 4, 500).tolist()
    ps = [y if rng.random() < 0.7 else int(rng.integers(0, 4)) for y in ys]
    track = Track(window=50)
    acc, kappa = metrics.Accuracy(), metrics.CohenKappa()
    for y, p in zip(ys, ps, strict=True):
        track.update(y, p)
        acc.update(y, p)
        kappa.update(y, p)
    assert track.n == 500
    assert track.accuracy == pytest.approx(acc.get())
    assert track.kappa == pytest.approx(kappa.get())
    hits = np.array(ys) == np.array(ps)
    assert track.rolling == pytest.approx(hits[-50:].mean())


def test_recall_and_confusion() -> None:
    track = Track(window=10)
    for y, p in [("a", "a"), ("a", "b"), ("b", "b"), ("b", "b"), ("c", "a")]:
        track.update(y, p)
    assert track.recall() == {"a": 0.5, "b": 1.0, "c": 0.0}
    classes, cm = track.confusion()
    assert classes == ["a", "b", "c"]
    assert cm == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_layers_and_reported_are_scored_separately() -> None:
    m = StreamMetrics(n_layers=2, window=100)
    m.update(1, _pred(1, (0, 1)), at=1)
    m.update(0, _pred(1, (0, 1)), at=2)
    assert m.reported.accuracy == 0.5
    assert [t.accuracy for t in m.layers] == [0.5, 0.5]
    assert m.layers[0].recall() == {0: 1.0, 1: 0.0}


def test_unpredicted_samples_are_not_scored() -> None:
    m = StreamMetrics(n_layers=1)
    assert m.update(3, _pred(None, (None,)), at=1) is False
    assert m.reported.n == 0 and m.layers[0].n == 0


def test_early_exit_scores_only_the_layers_computed() -> None:
    m = StreamMetrics(n_layers=3)
    m.update(1, _pred(1, (1,)), at=1)
    assert [t.n for t in m.layers] == [1, 0, 0]


def _drifting(n: int, seed: int = 0) -> list[tuple[int, int]]:
    """Right 95% of the time, then from n//2 on right 20% of the time: one abrupt drift."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        y = int(rng.integers(0, 3))
        right = rng.random() < (0.95 if i < n // 2 else 0.2)
        out.append((y, y if right else (y + 1) % 3))
    return out


def test_adwin_flags_an_abrupt_drift_soon_after_it_happens() -> None:
    m = StreamMetrics(n_layers=1)
    for i, (y, p) in enumerate(_drifting(4000), start=1):
        m.update(y, _pred(p, (p,)), at=i)
    assert m.drifts, "ADWIN saw no drift in an abrupt 0.95 -> 0.20 change"
    # Measured: first flag at sample 2048 (the change is at 2000; ADWIN checks every 32).
    assert 2000 < m.drifts[0] < 2300


def test_state_is_json_and_resumes_to_the_same_figures() -> None:
    stream = _drifting(3000, seed=1)
    whole = StreamMetrics(n_layers=2, window=200)
    part = StreamMetrics(n_layers=2, window=200)
    for i, (y, p) in enumerate(stream, start=1):
        whole.update(y, _pred(p, (y, p)), at=i)
        if i <= 1700:
            part.update(y, _pred(p, (y, p)), at=i)
    resumed = StreamMetrics.from_state(json.loads(json.dumps(part.state())))
    assert resumed.summary() == part.summary()
    for i, (y, p) in enumerate(stream[1700:], start=1701):
        resumed.update(y, _pred(p, (y, p)), at=i)
    got, want = resumed.summary(), whole.summary()
    assert got.pop("drifts") >= 1 and want.pop("drifts") >= 1
    assert got == want
    assert resumed.reported.confusion() == whole.reported.confusion()


def test_state_with_string_and_bool_labels_round_trips() -> None:
    m = StreamMetrics(n_layers=1)
    for y, p in [("UP", "UP"), ("DOWN", "UP"), (True, True)]:
        m.update(y, _pred(p, (p,)), at=0)
    back = StreamMetrics.from_state(json.loads(json.dumps(m.state())))
    assert back.reported.confusion() == m.reported.confusion()


def test_bad_state_and_window_are_errors() -> None:
    with pytest.raises(ModelError, match="metric state format"):
        StreamMetrics.from_state({"format": "other"})
    with pytest.raises(ModelError, match="window"):
        StreamMetrics(n_layers=1, window=0)
