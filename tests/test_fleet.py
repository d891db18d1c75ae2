"""Federated averaging of SPELA models (spela_stream.fleet): the weighted average, the exact
merge of standardiser statistics, the fleet's label order, and a fleet that beats its devices."""

from __future__ import annotations

import socket
import threading
from typing import Any

import numpy as np
import pytest

from spela_stream.errors import ModelError
from spela_stream.fleet import Update, adopt, merge, rebase, shared_keys, union_labels
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
        # float32 sums in another order: within an ulp of values near 1 (1.2e-7)
        np.testing.assert_allclose(merged.state[key], expected, rtol=1e-6, atol=1e-7)
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
    for key in ("memory.seen", "memory.last"):  # per class: when it was last seen too
        mine_per_class = dict(zip(mine["labels"], mine[key], strict=True))
        assert dict(zip(order, state[key], strict=True)) == mine_per_class
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


def test_rebase_keeps_what_a_device_learned_while_the_fleet_merged(blobs: Any) -> None:
    """A device sends its update, learns 20 more samples while the fleet merges it with
    another's, then rebases: its weights are the merge plus its change since the update, and
    its input statistics are those of one standardiser over every sample (base, both updates,
    the 20 new ones)."""
    X, y = blobs(n=130)
    base = trained(X[:40], y[:40]).state_dict()
    mine = trained(X[40:70], y[40:70], base)
    sent = mine.state_dict()
    other = trained(X[70:110], y[70:110], base).state_dict()
    merged = merge(base, {"me": Update(sent, 30), "other": Update(other, 40)}).state
    for row, label in zip(X[110:], y[110:], strict=True):
        mine.learn_one(row.astype(np.float32), label)
    now = mine.state_dict()
    state = rebase(now, sent, merged)
    for key in ("layers.0.weight", "layers.1.bias"):
        np.testing.assert_allclose(state[key], merged[key] + (now[key] - sent[key]), rtol=1e-5)
    one = Standardiser(X.shape[1])
    for row in X:
        one.update(row.astype(np.float32).astype(np.float64))
    assert int(state["scaler.count"]) == 130
    np.testing.assert_allclose(state["scaler.mean"], one.mean, rtol=1e-9)
    np.testing.assert_allclose(state["scaler.m2"], one.m2, rtol=1e-9)
    assert SpelaMLP.from_state(state).predict_one(X[0].astype(np.float32)) is not None


def test_a_fresh_device_is_pooled_from_nothing(blobs: Any) -> None:
    """A device new to the fleet sends statistics of its own samples only (``fresh``): the
    merge adds them to the fleet's instead of taking the fleet's out of them first."""
    X, y = blobs(n=90)
    base = trained(X[:40], y[:40]).state_dict()
    old = trained(X[40:60], y[40:60], base).state_dict()
    new = trained(X[60:], y[60:]).state_dict()
    merged = merge(base, {"old": Update(old, 20), "new": Update(new, 30, fresh=True)})
    one = Standardiser(X.shape[1])
    for row in X:
        one.update(row.astype(np.float32).astype(np.float64))
    assert int(merged.state["scaler.count"]) == 90
    np.testing.assert_allclose(merged.state["scaler.mean"], one.mean, rtol=1e-9)


def test_fleet_commands_name_the_extra_when_flwr_is_missing(monkeypatch: Any) -> None:
    import importlib.util

    from typer.testing import CliRunner

    from cli.app import app

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "flwr" else real(name, *a))  # fmt: skip
    for args in (["fleet", "server"], ["fleet", "device", "--superlink", "h:1", "--name", "a"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1, result.output
        assert "Error: " in result.output and "pip install 'spela-stream[fleet]'" in result.output


def readout_state(means: Any, labels: list[Any], hits: float) -> dict[str, Any]:
    """A state that holds only a class-mean readout (``readout.ClassMeans``) and its labels."""
    return {"labels": labels, "readout.hits": np.array([[0.5, hits]]),
            **{f"readout.0.{k}": v for k, v in means.state().items()}}  # fmt: skip


def test_class_means_merge_to_those_of_one_readout_that_saw_every_sample() -> None:
    """The fleet's readout knows classes a, b; device x (from it) sees a and c, device y (from
    it) sees b, device z is new (fresh) and met c before a, so its rows are the other way
    round. The merged class means and counts are those of one readout that folded every
    sample in, in the fleet's label order; the hit rates are averaged as the layers are."""
    from spela_stream.readout import ClassMeans

    rng = np.random.default_rng(0)
    samples = {name: (rng.normal(size=(n, 4)), k) for name, n, k in (
        ("base", 12, [0, 1]), ("x", 9, [0, 2]), ("y", 7, [1]), ("z", 5, [1, 0]))}  # fmt: skip
    one, base = ClassMeans(4), ClassMeans(4)
    states: dict[str, dict[str, Any]] = {}
    for name, (h, ks) in samples.items():
        k = np.asarray([ks[j % len(ks)] for j in range(len(h))])
        own = base if name == "base" else (
            ClassMeans(4) if name == "z" else ClassMeans.from_state(base.state()))  # fmt: skip
        own.update(h, k)
        fleet_k = np.asarray({"z": [2, 0]}.get(name, [0, 1, 2]))[k]  # z's labels: c, a
        one.update(h, fleet_k)
        labels = {"base": ["a", "b"], "z": ["c", "a"]}.get(name, ["a", "b", "c"])
        states[name] = readout_state(own, labels, {"base": 0.2, "x": 0.4, "y": 0.6}.get(name, 0.8))
    merged = merge(states["base"], {
        "x": Update(states["x"], 9), "y": Update(states["y"], 7),
        "z": Update(states["z"], 5, fresh=True)}, readouts=True).state  # fmt: skip
    assert merged["labels"] == ["a", "b", "c"]
    np.testing.assert_array_equal(merged["readout.0.counts"], one.counts)
    np.testing.assert_allclose(merged["readout.0.means"], one.means, rtol=1e-12, atol=1e-12)
    n = {name: int(st["readout.0.n"]) for name, st in states.items()}
    assert int(merged["readout.0.n"]) == n["x"] + n["y"] - n["base"] + n["z"]
    np.testing.assert_allclose(merged["readout.hits"], [[0.5, (9 * 0.4 + 7 * 0.6 + 5 * 0.8) / 21]])
    state = adopt({"labels": ["a", "b", "c"]}, merged)  # a device takes the fleet's readout
    np.testing.assert_array_equal(state["readout.0.means"], merged["readout.0.means"])


def test_a_fleet_that_pools_readouts_carries_them_to_every_device(blobs: Any) -> None:
    """Two devices learn different classes from scratch; by default the merge has no readout
    and a device that adopts it drops its own; pooled, the merge's readout holds every
    class's mean (counts add up), a device that adopts it predicts from it, and rebase pools
    what a device's readout folded in since its update on top of the fleet's."""
    X, labels = blobs(n=120)
    y = np.asarray(labels)
    a = trained(X[:60][y[:60] < 2], [k for k in labels[:60] if k < 2])
    b = trained(X[:60][y[:60] >= 2], [k for k in labels[:60] if k >= 2], {
        **SpelaMLP(hidden=(16, 8), seed=0, memory=50).state_dict(), "labels": [0, 1]})  # fmt: skip
    sa, sb = a.state_dict(), b.state_dict()
    plain = merge(None, {"a": Update(sa, 1), "b": Update(sb, 1)}).state
    assert not any(k.startswith("readout.") for k in plain)  # by default: not pooled
    assert not any(k.startswith("readout.") for k in adopt(sa, plain))  # and dropped
    merged = merge(None, {"a": Update(sa, 1), "b": Update(sb, 1)}, readouts=True).state
    counts = merged["readout.0.counts"]
    assert len(counts) == len(merged["labels"]) == 3
    assert int(counts.sum()) == int(sa["readout.0.counts"].sum() + sb["readout.0.counts"].sum())
    for row, label in zip(X[60:], labels[60:], strict=True):
        a.learn_one(row.astype(np.float32), label)
    now = a.state_dict()
    state = rebase(now, sa, merged)
    added = now["readout.0.counts"] - np.pad(sa["readout.0.counts"], (0, 1))
    np.testing.assert_array_equal(state["readout.0.counts"], counts + added)
    model = SpelaMLP.from_state(adopt(sa, merged))
    assert model.means_readout is not None and len(model.means_readout.layers[0].counts) == 3
    assert model.predict_one(X[0].astype(np.float32)) in merged["labels"]


# ---------------------------------------------------------------------- a device's link, no flwr


def _drive(link: Any, stream: Any, on_wait: Any = None) -> threading.Thread:
    """Run ``link.wrap(stream)`` through its loop in a thread (``on_wait`` at each ``None``)."""

    def items() -> Any:
        for item in link.wrap(stream):
            if item is None and on_wait is not None:
                on_wait()
            yield item

    def work() -> None:
        for _ in link.loop.run(items(), every=10**6):
            pass

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def _link(blobs: Any, **kw: Any) -> tuple[Any, list[Any], list[str]]:
    from spela_stream.fleet_device import DeviceLink
    from spela_stream.prequential import Prequential

    X, y = blobs(n=20)
    loop = Prequential(SpelaMLP(hidden=(8,), seed=0, memory=0))
    logs: list[str] = []
    return DeviceLink(loop, "d0", log=logs.append, **kw), list(zip(X, y, strict=True)), logs


def test_a_paced_device_with_no_round_learns_its_next_quota_alone_not_one_sample(
    blobs: Any,
) -> None:
    """No round within ``hold``: a paced device learns its next ``per_round`` samples alone and
    waits again; 20 samples at 5 a round wait three times (before samples 6, 11 and 16), not
    once a sample past its first quota (15 waits of ``hold`` each); no linger after it."""
    link, stream, logs = _link(blobs, per_round=5, hold=0.3, linger=0)
    try:
        thread = _drive(link, stream)
        thread.join(60)
        assert not thread.is_alive(), logs
    finally:
        link.close()
    assert link.loop.learned == 20
    assert logs == ["device 'd0': no round in 0.3 s; learning its next 5 samples alone"] * 3


def test_a_device_whose_superlink_goes_learns_on_alone_and_ends_without_the_last_merge(
    blobs: Any,
) -> None:
    """A paced device waits (an hour's ``hold``) for a round at its SuperLink; the SuperLink
    goes and nothing listens there for ``patience``: the device counts the server gone, learns
    the rest of its stream alone and, its stream ended, stops lingering (an hour too) for a
    last merge that will not come; each step is on its log."""
    superlink = socket.create_server(("127.0.0.1", 0))
    address = f"127.0.0.1:{superlink.getsockname()[1]}"
    probed = threading.Event()

    def on_wait() -> None:  # the device has waited a while, its SuperLink there: it goes
        if probed.is_set():
            superlink.close()
        elif link._seen:
            probed.set()

    link, stream, logs = _link(blobs, per_round=5, hold=3600, linger=3600, superlink=address,
                               patience=0.5)  # fmt: skip
    try:
        thread = _drive(link, stream, on_wait)
        thread.join(60)
        assert not thread.is_alive(), logs
    finally:
        link.close()
        superlink.close()
    assert link.loop.learned == 20 and link.gone and not link.final and link.rounds == 0
    assert logs == [
        f"device 'd0': nothing has listened at the fleet's SuperLink {address} for 0.5 s: "
        "the server is gone",
        "device 'd0': learning on alone until a round comes",
        "device 'd0': its stream has ended and the fleet's server is gone; ending without the "
        "fleet's last merge",
    ]


def test_a_device_ends_only_its_own_flower_processes(tmp_path: Any, monkeypatch: Any) -> None:
    """Two fleets' devices of one name, each in its own folder with the same relative ``--db``
    (as every test of tests/test_flower.py runs them): the FLWR_HOME that marks a device's
    Flower processes is absolute, so one device ending its strays (as it does when it starts
    and ends) leaves the other's SuperNode alone, and the one marked is its own folder's."""
    from pathlib import Path

    from spela_stream import fleet_procs

    fake = tmp_path / "flower-supernode"  # a SuperNode that waits: flwr is not needed here
    fake.write_text("#!/bin/sh\nexec sleep 60\n")
    fake.chmod(0o755)
    monkeypatch.setattr(fleet_procs, "executable", lambda name: str(fake))
    nodes = {}
    try:
        for fleet in ("a", "b"):
            (tmp_path / fleet).mkdir()
            monkeypatch.chdir(tmp_path / fleet)
            nodes[fleet] = fleet_procs.supernode(
                "127.0.0.1:1", 0, {"device": "d0"}, Path("d0.db.d0.flower")).start()  # fmt: skip
        assert fleet_procs.end_strays(Path("d0.db.d0.flower/flwr-home"), grace=5) == [
            nodes["b"].pid]  # fmt: skip
        assert nodes["a"].alive() and nodes["b"].proc.wait(10) is not None
        environ = (Path("/proc") / str(nodes["a"].pid) / "environ").read_bytes()
        home = tmp_path.resolve() / "a" / "d0.db.d0.flower" / "flwr-home"
        assert f"FLWR_HOME={home}\0".encode() in environ
    finally:
        for node in nodes.values():
            node.stop()
