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


def test_per_class_forgetting_equals_a_hand_computed_case() -> None:
    # Window 3 per class. Class "a": right, right, right (full window: best 3/3), then wrong,
    # wrong: rolling 1/3 (the last three are right, wrong, wrong), forgetting 1 - 1/3 = 2/3.
    # Class "b": wrong, right (never a full window): rolling 1/2, no best, no forgetting.
    # Class "c": right, wrong, right (best 2/3), right (rolling 2/3: wrong, right, right),
    # then wrong (right, right, wrong: 2/3), forgetting 0.
    m = StreamMetrics(n_layers=1, window=1000, class_window=3)
    seq = [
        ("a", "a"), ("a", "a"), ("c", "c"), ("a", "a"), ("b", "a"), ("c", "a"), ("c", "c"),
        ("a", "b"), ("b", "b"), ("c", "c"), ("a", "c"), ("c", "a"),
    ]  # fmt: skip
    for i, (y, p) in enumerate(seq, start=1):
        m.update(y, _pred(p, (p,)), at=i)
    pc = m.per_class
    assert pc.classes() == ["a", "b", "c"]
    assert [pc.n[c] for c in "abc"] == [5, 2, 5]
    assert [pc.accuracy(c) for c in "abc"] == [3 / 5, 1 / 2, 3 / 5]
    assert [pc.rolling(c) for c in "abc"] == [1 / 3, 1 / 2, 2 / 3]
    assert [pc.best(c) for c in "abc"] == [1.0, None, 2 / 3]
    assert [pc.forgetting(c) for c in "abc"] == [2 / 3, None, 0.0]
    assert pc.average_forgetting() == pytest.approx((2 / 3 + 0.0) / 2)
    assert pc.worst() == ("a", 2 / 3)
    s = m.summary()
    assert s["forgetting"] == pytest.approx(1 / 3) and s["worst_class"] == ["a", 2 / 3]
    assert s["classes"] == 3


def test_per_class_window_follows_a_small_window_and_caps_at_100() -> None:
    assert StreamMetrics(n_layers=1, window=20).per_class.window == 20
    assert StreamMetrics(n_layers=1).per_class.window == 100
    with pytest.raises(ModelError, match="per-class window"):
        StreamMetrics(n_layers=1, class_window=0)


def test_a_class_that_recurs_shows_its_forgetting_and_the_state_resumes_it_exactly() -> None:
    # Class 0 learned well (90% right), then class 1 only, then class 0 returns 30% right.
    rng = np.random.default_rng(3)
    stream = [(0, rng.random() < 0.9) for _ in range(300)]
    stream += [(1, rng.random() < 0.9) for _ in range(300)]
    stream += [(0, rng.random() < 0.3) for _ in range(150)]
    whole, part = StreamMetrics(n_layers=1), StreamMetrics(n_layers=1)
    for i, (y, ok) in enumerate(stream, start=1):
        p = y if ok else 1 - y
        whole.update(y, _pred(p, (p,)), at=i)
        if i <= 640:  # mid-stream: class 0's window is full, class 1's too
            part.update(y, _pred(p, (p,)), at=i)
    resumed = StreamMetrics.from_state(json.loads(json.dumps(part.state())))
    assert resumed.summary() == part.summary()
    for i, (y, ok) in enumerate(stream[640:], start=641):
        p = y if ok else 1 - y
        resumed.update(y, _pred(p, (p,)), at=i)
    got_s, want_s = resumed.summary(), whole.summary()
    got_s.pop("drifts"), want_s.pop("drifts")  # ADWIN replays its window: drift flags may differ
    assert got_s == want_s
    for c in (0, 1):
        got, want = resumed.per_class, whole.per_class
        assert (got.n[c], got.rolling(c), got.best(c)) == (want.n[c], want.rolling(c), want.best(c))
    f0 = whole.per_class.forgetting(0)
    assert f0 is not None and f0 > 0.4  # the return at 30% against a best near 90%
    assert whole.summary()["worst_class"][0] == 0


def test_a_version_1_state_resumes_with_per_class_figures_from_then_on() -> None:
    m = StreamMetrics(n_layers=1)
    m.update(1, _pred(1, (1,)), at=1)
    old = m.state()
    old["format"] = "spela-stream.metrics/1"
    del old["per_class"]
    back = StreamMetrics.from_state(old)
    assert back.reported.n == 1 and back.per_class.classes() == []


def test_rolling_accuracy_equals_rivers_rolling_and_survives_a_resume() -> None:
    """The window's accuracy, counted when read, is River's ``Rolling(Accuracy)`` exactly."""
    import random

    from river import metrics as river_metrics
    from river import utils

    from spela_stream.metrics import Track

    rng = random.Random(3)
    track, river = Track(window=50), utils.Rolling(river_metrics.Accuracy, window_size=50)
    for i in range(400):
        y, p = rng.choice([0, 1, "a"]), rng.choice([0, 1, "a"])
        track.update(y, p)
        river.update(y, p)
        if i % 7 == 0:
            assert track.rolling == river.get()
    again = Track(window=50)
    again.load(track.state())
    assert again.rolling == track.rolling == river.get() and again.n == track.n == 400
