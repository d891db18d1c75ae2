"""Federated averaging of SPELA models (spela_stream.fleet): the weighted average, the exact
merge of standardiser statistics, the fleet's label order, and a fleet that beats its devices."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from spela_stream.errors import ModelError
from spela_stream.fleet import Update, adopt, merge, shared_keys, union_labels
from spela_stream.model import SpelaMLP
from spela_stream.scaling import Standardiser


def trained(X: np.ndarray, y: list[Any], state: dict[str, Any] | None = None) -> SpelaMLP:
    model = SpelaMLP(hidden=(16, 8), seed=0, memory=50) if state is None else (
        SpelaMLP.from_state(state))  # fmt: skip
    for row, label in zip(X, y, strict=True):
        model.learn_one(row.astype(np.float32), label)
    return model


def test_layers_are_averaged_weighted_by_samples_learned(blobs: Any) -> None:
    X, y = blobs(n=90)
    a, b = trained(X[:30], y[:30]), trained(X[30:], y[30:])
    merged = merge(None, {"a": Update(a.state_dict(), 30), "b": Update(b.state_dict(), 60)})
    for key in ("layers.0.weight", "layers.1.bias"):
        expected = (30 * a.state_dict()[key] + 60 * b.state_dict()[key]) / 90
        np.testing.assert_allclose(merged.state[key], expected, rtol=1e-6)
    assert merged.learned == 90 and merged.devices == 2
    assert merged.bytes_in == sum(
        a.state_dict()[k].nbytes + b.state_dict()[k].nbytes for k in shared_keys(a.state_dict())
    )


def test_one_device_merges_to_itself_and_idle_devices_are_left_out(blobs: Any) -> None:
    X, y = blobs(n=60)
    base = trained(X[:20], y[:20]).state_dict()
    moved = trained(X[20:], y[20:], base).state_dict()
    merged = merge(base, {"busy": Update(moved, 40), "idle": Update(base, 0)})
    assert merged.devices == 1
    for key in shared_keys(moved):
        np.testing.assert_allclose(merged.state[key], moved[key], rtol=1e-9, atol=1e-12)


def test_standardiser_statistics_merge_to_those_of_one_that_saw_everything(blobs: Any) -> None:
    """Three devices start from a fleet model that saw 40 samples and see 30, 50 and 20 more: the
    merged input statistics equal one standardiser's over all 140, and so do the hidden layer's
    input statistics' counts."""
    X, y = blobs(n=140)
    base = trained(X[:40], y[:40]).state_dict()
    parts = {"a": slice(40, 70), "b": slice(70, 120), "c": slice(120, 140)}
    updates = {}
    for name, part in parts.items():
        device = trained(X[part], y[part], base)
        updates[name] = Update(device.state_dict(), part.stop - part.start)
    merged = merge(base, updates)
    one = Standardiser(X.shape[1])
    for row in X:
        one.update(row.astype(np.float32).astype(np.float64))
    assert int(merged.state["scaler.count"]) == 140
    np.testing.assert_allclose(merged.state["scaler.mean"], one.mean, rtol=1e-9)
    np.testing.assert_allclose(merged.state["scaler.m2"], one.m2, rtol=1e-9)
    assert int(merged.state["layers.1.input_count"]) == int(base["layers.1.input_count"]) + sum(
        int(u.state["layers.1.input_count"]) - int(base["layers.1.input_count"])
        for u in updates.values()
    )


def test_the_fleet_owns_the_label_order() -> None:
    fleet = {"labels": ["cat", "dog"]}
    updates = {
        "b": Update({"labels": ["cat", "dog", "owl"]}, 1),
        "a": Update({"labels": ["cat", "dog", "emu", "owl"]}, 1),
    }
    labels, misaligned = union_labels(fleet["labels"], updates)
    assert labels == ["cat", "dog", "emu", "owl"]  # new ones in the order of device a, then b
    assert misaligned == 1  # b met owl at index 2; the fleet puts it at 3


def test_adopt_renumbers_the_replay_memory_to_the_fleets_labels(blobs: Any) -> None:
    X, y = blobs(n=60)
    names = ["x", "y", "z"]
    device = trained(X, [names[k] for k in y])  # labels in the device's order of first sight
    mine = device.state_dict()
    order = ["z", "y", "x"]
    fleet = {**{k: mine[k] for k in shared_keys(mine)}, "labels": order}
    state = adopt(mine, fleet)
    assert state["labels"] == order
    before = [mine["labels"][k] for k in mine["memory.y"]]
    assert [order[k] for k in state["memory.y"]] == before
    seen = dict(zip(mine["labels"], mine["memory.seen"], strict=True))
    assert dict(zip(order, state["memory.seen"], strict=True)) == seen
    model = SpelaMLP.from_state(state)
    assert model.predict_one(X[0].astype(np.float32)) in order


def test_adopt_keeps_the_rest_of_a_slow_window_after_a_new_class(blobs: Any) -> None:
    X, y = blobs(n=60)
    device = trained(X, y)
    mine = device.state_dict()
    key = next(k for k in mine if k.endswith("input_slow_until"))
    count = key.removesuffix("slow_until") + "count"
    left = int(mine[key]) - int(mine[count])
    assert left > 0  # a class came 2,000 samples ago at most: its window is open
    fleet = {**{k: mine[k] for k in shared_keys(mine)}, "labels": list(mine["labels"])}
    fleet[count] = np.asarray(int(mine[count]) * 4)  # the fleet has seen four devices' samples
    state = adopt(mine, fleet)
    assert int(state[key]) - int(state[count]) == left


def test_devices_must_share_seed_and_shape(blobs: Any) -> None:
    X, y = blobs(n=20)
    a = trained(X, y).state_dict()
    other_seed = SpelaMLP(hidden=(16, 8), seed=1, memory=50)
    other_shape = SpelaMLP(hidden=(16,), seed=0, memory=50)
    for model in (other_seed, other_shape):
        for row, label in zip(X, y, strict=True):
            model.learn_one(row.astype(np.float32), label)
    with pytest.raises(ModelError, match="same --seed"):
        merge(None, {"a": Update(a, 20), "b": Update(other_seed.state_dict(), 20)})
    with pytest.raises(ModelError, match="same --hidden"):
        merge(None, {"a": Update(a, 20), "b": Update(other_shape.state_dict(), 20)})
    with pytest.raises(ModelError, match="at least one"):
        merge(None, {})


def test_a_class_skewed_fleet_beats_its_isolated_devices(blobs: Any) -> None:
    """Four devices each see two of eight classes, the fleet's eight declared up front; after 20
    rounds of averaging the fleet's model scores the held-out set far above any device learning
    alone (which knows two classes), and within 0.2 of one device that saw every sample."""
    X, y = blobs(n=2400, d=10, classes=8, seed=3)
    Xt, yt = X[2000:], y[2000:]
    X, y = X[:2000], y[:2000]
    devices = [[i for i in range(2000) if y[i] // 2 == d] for d in range(4)]

    def accuracy(model: SpelaMLP) -> float:
        preds = [model.predict_one(r.astype(np.float32)) for r in Xt]
        return float(np.mean([p == t for p, t in zip(preds, yt, strict=True)]))

    isolated = [trained(X[idx], [y[i] for i in idx]) for idx in devices]
    fresh = SpelaMLP(hidden=(16, 8), seed=0, memory=50).state_dict()
    one = trained(X, y, {**fresh, "labels": list(range(8))})
    fleet: dict[str, Any] | None = None
    states: list[dict[str, Any]] = [{**fresh, "labels": list(range(8))} for _ in range(4)]
    rounds = 20
    for r in range(rounds):
        updates = {}
        for d, idx in enumerate(devices):
            part = idx[r::rounds]
            model = trained(X[part], [y[i] for i in part], states[d])
            updates[f"d{d}"] = Update(model.state_dict(), len(part))
            states[d] = model.state_dict()
        merged = merge(fleet, updates)
        assert merged.misaligned == 0 and merged.learned == sum(u.learned for u in updates.values())
        fleet = merged.state
        states = [adopt(s, fleet) for s in states]
    final = SpelaMLP.from_state(states[0])
    best_alone = max(accuracy(m) for m in isolated)
    assert best_alone < 0.3  # two classes of eight
    assert accuracy(one) - 0.2 < accuracy(final) > best_alone + 0.25  # 0.71, 0.565, 0.29
