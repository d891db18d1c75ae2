"""The running standardiser against numpy's mean and (population) std."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spela_stream.scaling import Standardiser, TensorStandardiser


def _data(seed: int = 0, n: int = 257, d: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scales = np.array([1e-3, 1.0, 10.0, 1e4, 3.0])[:d]
    return rng.normal(loc=np.arange(d) * 100.0, scale=scales, size=(n, d))


def _check_stats(s: Standardiser, X: np.ndarray) -> None:
    assert s.count == X.shape[0]
    np.testing.assert_allclose(s.mean, X.mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.sqrt(s.m2 / s.count), X.std(axis=0), rtol=1e-9)


def test_per_row_updates_match_numpy() -> None:
    X = _data()
    s = Standardiser(5, clip=None)
    for row in X:
        s.update(row)
    _check_stats(s, X)
    np.testing.assert_allclose(
        s.transform(X), (X - X.mean(axis=0)) / X.std(axis=0), rtol=1e-8, atol=1e-9
    )


@pytest.mark.parametrize("sizes", [(257,), (1, 256), (100, 1, 50, 106), (7, 0, 250)])
def test_batched_updates_match_numpy(sizes: tuple[int, ...]) -> None:
    X = _data(seed=1)
    s = Standardiser(5, clip=None)
    start = 0
    for size in sizes:
        s.update(X[start : start + size])
        start += size
    assert start == X.shape[0]
    _check_stats(s, X)


def test_batched_and_per_row_agree() -> None:
    X = _data(seed=2)
    a, b = Standardiser(5), Standardiser(5)
    for row in X:
        a.update(row)
    b.update(X[:10])
    b.update(X[10])
    b.update(X[11:])
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-12)
    np.testing.assert_allclose(a.m2, b.m2, rtol=1e-9)


def test_before_any_update_transform_is_zero() -> None:
    s = Standardiser(3)
    out = s.transform(np.array([[1.0, -2.0, 3.0], [4.0, 5.0, 6.0]]))
    assert out.shape == (2, 3)
    assert np.array_equal(out, np.zeros((2, 3)))


def test_clip_and_constant_features() -> None:
    s = Standardiser(2, clip=3.0)
    for v in (-1.0, 1.0, -1.0, 1.0):
        s.update(np.array([v, 7.0]))  # feature 1 is constant: std 0
    out = s.transform(np.array([100.0, 7.5]))
    # Feature 0: (100 - 0) / 1 clipped to 3. Feature 1: zero std leaves the scale at 1.
    np.testing.assert_allclose(out, [3.0, 0.5])
    assert s.transform(np.array([-100.0, 7.0]))[0] == -3.0
    unclipped = Standardiser(2, clip=None)
    unclipped.load(s.state())
    assert unclipped.transform(np.array([100.0, 7.0]))[0] == pytest.approx(100.0)


def test_transform_does_not_touch_input_or_stats() -> None:
    s = Standardiser(3)
    s.update(_data(d=3)[:20])
    x = np.array([1e6, -1e6, 0.5])
    x0 = x.copy()
    state = s.state()
    s.transform(x)
    assert np.array_equal(x, x0)
    assert all(np.array_equal(state[k], v) for k, v in s.state().items())


def test_update_does_not_touch_input() -> None:
    s = Standardiser(3)
    x = np.array([1.0, 2.0, 3.0])
    s.update(x)
    s.update(x)
    assert np.array_equal(x, [1.0, 2.0, 3.0])


def test_state_round_trip() -> None:
    X = _data(seed=3)
    s = Standardiser(5)
    s.update(X[:100])
    state = s.state()
    assert set(state) == {"count", "mean", "m2"}
    assert all(isinstance(v, np.ndarray) for v in state.values())
    assert state["count"].dtype == np.int64 and int(state["count"]) == 100
    back = Standardiser(5)
    back.load(state)
    assert np.array_equal(back.transform(X[100:]), s.transform(X[100:]))
    # Loaded statistics are copies, and both go on identically.
    state["mean"][:] = 0.0
    back.update(X[100:])
    s.update(X[100:])
    assert np.array_equal(back.mean, s.mean) and np.array_equal(back.m2, s.m2)
    _check_stats(back, X)


# ------------------------------------------------------------------ TensorStandardiser


def _ema_reference(X: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """Bias-corrected exponential moving mean and variance, one row at a time."""
    m = np.zeros(X.shape[1])
    v = np.zeros(X.shape[1])
    mean = m
    for t, row in enumerate(X, start=1):
        m = beta * m + (1 - beta) * row
        mean = m / (1 - beta**t)
        v = beta * v + (1 - beta) * (row - mean) ** 2
    return mean, v / (1 - beta ** X.shape[0])


def test_tensor_standardiser_welford_matches_numpy() -> None:
    X = _data(seed=3)
    s = TensorStandardiser(5)
    for row in X[:100]:
        s.update(torch.as_tensor(row[None, :]))
    s.update(torch.as_tensor(X[100:]))  # a batch after single rows: Chan's merge
    np.testing.assert_allclose(s.mean.numpy(), X.mean(axis=0), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(s.variance().sqrt().numpy(), X.std(axis=0), rtol=1e-9)


def test_tensor_standardiser_ema_matches_reference_rows_and_batches() -> None:
    X = _data(seed=4, n=120)
    mean, var = _ema_reference(X, 0.9)
    rows = TensorStandardiser(5, decay=0.9)
    for row in X:
        rows.update(torch.as_tensor(row[None, :]))
    np.testing.assert_allclose(rows.mean.numpy(), mean, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(rows.variance().numpy(), var, rtol=1e-10, atol=1e-9)
    batched = TensorStandardiser(5, decay=0.9)
    batched.update(torch.as_tensor(X[:60]))
    batched.update(torch.as_tensor(X[60:]))
    # The batched form weights rows exactly as the per-row form does; the variance uses the
    # batch's final mean for every row, so it is close but not identical.
    np.testing.assert_allclose(batched.mean.numpy(), mean, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(batched.variance().numpy(), var, rtol=0.2)


def test_tensor_standardiser_ema_forgets() -> None:
    s = TensorStandardiser(1, decay=0.9)
    for _ in range(200):
        s.update(torch.tensor([[0.0]]))
    for _ in range(200):
        s.update(torch.tensor([[10.0]]))
    # After 200 samples at the new level the old level has weight 0.9**200 ~ 7e-10.
    assert float(s.mean[0]) == pytest.approx(10.0, abs=1e-6)
    welford = TensorStandardiser(1)
    for value in [0.0] * 200 + [10.0] * 200:
        welford.update(torch.tensor([[value]]))
    assert float(welford.mean[0]) == pytest.approx(5.0)


def test_tensor_standardiser_transform_and_state_round_trip() -> None:
    X = _data(seed=5)
    s = TensorStandardiser(5, decay=0.98)
    assert torch.equal(s.transform(torch.ones(2, 5)), torch.zeros(2, 5))
    s.update(torch.as_tensor(X))
    out = s.transform(torch.as_tensor(X[:3]))
    expected = (X[:3] - s.mean.numpy()) / s.variance().sqrt().numpy()
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-9)
    back = TensorStandardiser(5, decay=0.98)
    back.load(s.state())
    assert back.count == s.count
    assert torch.equal(back.transform(torch.as_tensor(X[:3])), out)


def test_tensor_standardiser_slow_span_round_trips_and_old_states_still_load() -> None:
    X = _data(seed=6, n=80)
    s = TensorStandardiser(5, decay=0.9, slow_decay=0.99)
    s.update(torch.as_tensor(X[:20]))
    s.slow_down(30)  # updates 20..49 use 0.99, the rest 0.9
    for row in X[20:60]:
        s.update(torch.as_tensor(row[None, :]))
    assert s.slow_until == 50
    assert s.weight == pytest.approx(1 - 0.9**20 * 0.99**30 * 0.9**10, rel=1e-12)
    back = TensorStandardiser(5, decay=0.9, slow_decay=0.99)
    back.load(s.state())
    assert (back.slow_until, back.weight) == (s.slow_until, s.weight)
    for t in (s, back):
        t.update(torch.as_tensor(X[60:]))
    assert torch.equal(back.mean, s.mean) and torch.equal(back.m2, s.m2)
    # A state saved before the span existed (no weight, no slow_until) had one decay throughout.
    plain = TensorStandardiser(5, decay=0.9)
    plain.update(torch.as_tensor(X[:40]))
    old = {k: v for k, v in plain.state().items() if k in ("count", "mean", "m2")}
    loaded = TensorStandardiser(5, decay=0.9, slow_decay=0.99)
    loaded.load(old)
    assert loaded.slow_until == 0 and loaded.weight == pytest.approx(1 - 0.9**40, rel=1e-12)
    np.testing.assert_allclose(loaded.variance().numpy(), plain.variance().numpy(), rtol=1e-12)
