"""Federated averaging of SPELA models: what a fleet's server does with its devices' states.

Each device learns its own stream from the fleet's model and, each round, sends its state and
``learned``, the samples it learned since it took that model. The server (``merge``):

- keeps the **label order**: the fleet's labels first, then labels new this round in the order
  the devices (sorted by name) met them. SPELA's class vectors are fixed by seed, row k for the
  k-th label, so a label must have the same index on every device or averaging mixes classes;
  a device that met a new label at another index than the fleet gives it is counted in
  ``misaligned`` (declare the classes up front, ``labels=``, to make that impossible);
- averages every layer's weight and bias, weighted by ``learned`` (FedAvg);
- merges the input standardiser's statistics (count, mean, M2) exactly: each device's are the
  fleet's plus what it saw since, so the deltas are taken out and pooled (Chan et al.), and the
  merged standardiser is the one a single device that had seen every sample would hold. A
  hidden layer's input statistics are moving averages (``hidden_decay``) of inputs that depend
  on the layers below, so they are averaged like the weights (counts add up); with
  ``hidden_decay=None`` they are Welford's and pooled exactly as the input's.

A device then ``adopt``s the merged model: the fleet's layers, statistics and labels, its own
replay memory (its class indices renumbered to the fleet's order) and its own counts.

>>> import numpy as np
>>> from spela_stream.model import SpelaMLP
>>> rng = np.random.default_rng(0)
>>> devices = {name: SpelaMLP(hidden=(8,), seed=0, memory=0) for name in "ab"}
>>> for name, model in devices.items():
...     for _ in range(30):
...         model.learn_one(rng.normal(size=3).astype(np.float32), name)
>>> merged = merge(None, {n: Update(m.state_dict(), 30) for n, m in devices.items()})
>>> merged.labels, merged.learned, int(merged.state["scaler.count"]), merged.misaligned
(['a', 'b'], 60, 60, 1)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ModelError
from .inputs import Label

_WEIGHT = re.compile(r"^layers\.\d+\.(weight|bias)$")
_STATS = re.compile(r"^(scaler\.|layers\.\d+\.input_)(count|mean|m2)$")
_VECTORS = re.compile(r"^layers\.\d+\.vectors$")
_READOUT = re.compile(r"^readout\.(hits|\d+\.(means|counts|var|n))$")


@dataclass(frozen=True)
class Update:
    """A device's state after a round, and the samples it learned since it took the fleet's."""

    state: Mapping[str, Any]
    learned: int
    fresh: bool = False  # learned from scratch, not from the fleet's model (new to the fleet)


@dataclass
class Merged:
    """The fleet's model after a round: its state (shared arrays and labels), what went in."""

    state: dict[str, Any]
    labels: list[Label]
    learned: int  # samples the devices learned this round, all together
    devices: int  # devices whose update was averaged (those that learned something)
    misaligned: int = 0  # (device, label) pairs met at another index than the fleet's
    bytes_in: int = 0  # the arrays the devices sent
    notes: list[str] = field(default_factory=list)


def shared_keys(state: Mapping[str, Any], readout: bool = False) -> list[str]:
    """The keys a fleet shares: layer weights, biases, class vectors, standardiser statistics
    (and with ``readout`` the class-mean readout's means, counts, variance and hit rates)."""
    return [k for k in state if _WEIGHT.match(k) or _STATS.match(k) or _VECTORS.match(k)
            or (readout and _READOUT.match(k))]  # fmt: skip


def union_labels(fleet: list[Label], updates: Mapping[str, Update]) -> tuple[list[Label], int]:
    """The fleet's labels then the new ones (devices sorted by name), and the misaligned count."""
    labels = list(fleet)
    known = set(labels)
    misaligned = 0
    for name in sorted(updates):
        for label in updates[name].state.get("labels", []):
            if label not in known:
                known.add(label)
                labels.append(label)
    index = {label: i for i, label in enumerate(labels)}
    for name in sorted(updates):
        for i, label in enumerate(updates[name].state.get("labels", [])):
            misaligned += index[label] != i
    return labels, misaligned


def _stats(state: Mapping[str, Any], prefix: str) -> tuple[int, np.ndarray, np.ndarray]:
    count = int(state[f"{prefix}count"])
    return (
        count,
        np.asarray(state[f"{prefix}mean"], np.float64),
        np.asarray(state[f"{prefix}m2"], np.float64),
    )


def _pool(
    a: tuple[int, np.ndarray, np.ndarray], b: tuple[int, np.ndarray, np.ndarray]
) -> tuple[int, np.ndarray, np.ndarray]:
    """Chan et al.: the statistics of two disjoint sets of samples, pooled."""
    na, ma, sa = a
    nb, mb, sb = b
    n = na + nb
    if n == 0:
        return 0, ma, sa
    delta = mb - ma
    return n, ma + delta * (nb / n), sa + sb + delta**2 * (na * nb / n)


def _since(
    device: tuple[int, np.ndarray, np.ndarray], base: tuple[int, np.ndarray, np.ndarray]
) -> tuple[int, np.ndarray, np.ndarray]:
    """What a device saw since ``base``: its statistics with the base's taken out (``_pool``
    inverted)."""
    n, m, s = device
    nb, mb, sb = base
    nl = n - nb
    if nl <= 0:
        return 0, np.zeros_like(m), np.zeros_like(s)
    ml = (n * m - nb * mb) / nl
    sl = s - sb - (ml - mb) ** 2 * (nb * nl / n)
    return nl, ml, np.maximum(sl, 0.0)


def merge(
    base: Mapping[str, Any] | None, updates: Mapping[str, Update], readouts: bool = False
) -> Merged:
    """The fleet's model after a round: ``base`` is the state the devices started from (None
    for the first round: every device started from scratch), ``updates`` the devices'. With
    ``readouts`` the devices' class-mean readouts are pooled too (off by default: each
    device's means live in the space of its own last layer, and pooled over a class-skewed
    fleet they read the merged layer badly, see README); without, ``adopt`` drops them."""
    if not updates:
        raise ModelError("a fleet round needs at least one device's update")
    fleet_labels = list(base.get("labels", [])) if base is not None else []
    labels, misaligned = union_labels(fleet_labels, updates)
    learning = {n: u for n, u in updates.items() if u.learned > 0} or updates
    first = next(iter(learning.values())).state
    keys = shared_keys(first)
    for name, u in learning.items():
        if set(shared_keys(u.state)) != set(keys):
            raise ModelError(
                f"device {name!r} has another model shape than the fleet's (the same --hidden "
                "and feature width on every device)"
            )
    total = sum(u.learned for u in learning.values())
    weights = {n: (u.learned / total if total else 1 / len(learning)) for n, u in learning.items()}
    state: dict[str, Any] = {"labels": labels}
    bytes_in = 0
    for key in shared_keys(first, readouts):
        arrays = {n: np.asarray(u.state[key]) for n, u in learning.items() if key in u.state}
        bytes_in += sum(a.nbytes for a in arrays.values())
        if _WEIGHT.match(key):
            state[key] = sum(w * arrays[n].astype(np.float64) for n, w in weights.items())
            state[key] = state[key].astype(first[key].dtype)
        elif _VECTORS.match(key):
            longest = max(arrays.values(), key=len)
            for name, a in arrays.items():
                if not np.array_equal(a, longest[: len(a)]):
                    raise ModelError(
                        f"device {name!r}: its class vectors differ from the fleet's (every "
                        "device needs the same --seed)"
                    )
            state[key] = longest.copy()
    prefixes = sorted({m.group(1) for k in keys if (m := _STATS.match(k))})
    moving = first.get("config", {}).get("hidden_decay") is not None
    for prefix in prefixes:
        zero = np.zeros_like(np.asarray(first[f"{prefix}mean"], np.float64))
        start = _stats(base, prefix) if base is not None and f"{prefix}count" in base else (
            0, zero, zero.copy())  # fmt: skip
        pooled = start
        for u in updates.values():  # a fresh device's statistics hold only its own samples
            origin = (0, zero, zero) if u.fresh else start
            pooled = _pool(pooled, _since(_stats(u.state, prefix), origin))
        state[f"{prefix}count"] = np.asarray(pooled[0], np.int64)
        state[f"{prefix}mean"], state[f"{prefix}m2"] = pooled[1], pooled[2]
        if moving and prefix != "scaler.":  # EMAs: a weighted average, as the layers
            for part in ("mean", "m2"):
                state[f"{prefix}{part}"] = np.sum(
                    [w * np.asarray(learning[n].state[f"{prefix}{part}"], np.float64)
                     for n, w in weights.items()], axis=0,
                )  # fmt: skip
    if readouts:
        state.update(_merge_readouts(base, learning, weights, labels))
    return Merged(state, labels, total, len(learning), misaligned, bytes_in)


# ---------------------------------------------------------------------- the class-mean readout

_MEANS = re.compile(r"^readout\.(\d+)\.means$")


def _running(
    base: tuple[np.ndarray, np.ndarray],
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    window: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Running means pooled (``readout.ClassMeans``: a plain mean of a class's samples up to
    ``window`` of them, then a moving one). ``base`` is the fleet's (mean, count); each part is
    a device's (mean, count) and its origin's, what it started from (the fleet's, or zeros for a
    device new to the fleet). Exact (the mean of every sample) while the counts stay within the
    window; past it a device's change weighs as its samples would in the moving mean."""
    mb, nb = base

    def col(c: np.ndarray) -> np.ndarray:
        c = np.asarray(c, np.float64)
        return c[..., None] if mb.ndim > c.ndim else c

    total = np.asarray(nb, np.int64).copy()
    num = np.zeros_like(mb)
    for m, n, om, on in parts:
        new = np.maximum(np.asarray(n, np.int64) - on, 0)
        total = total + new
        num += (m - om) * col(np.minimum(n, window)) + (om - mb) * col(np.minimum(new, window))
    eff = col(np.minimum(total, window))
    return np.where(eff > 0, mb + num / np.maximum(eff, 1.0), mb), total


def _rows(state: Mapping[str, Any], layer: int, rows: int, where: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """A readout layer's class means and counts with row j moved to ``where[j]`` (the fleet's
    index of the state's j-th label), ``rows`` of them (zeros for a class it has not met)."""
    means = np.asarray(state[f"readout.{layer}.means"], np.float64)
    counts = np.asarray(state[f"readout.{layer}.counts"], np.int64)
    if len(counts) > len(where):
        raise ModelError(f"readout.{layer}: {len(counts)} class means for {len(where)} labels")
    m, n = np.zeros((rows, means.shape[1])), np.zeros(rows, np.int64)
    m[where[: len(counts)]], n[where[: len(counts)]] = means, counts
    return m, n


def _where(labels: list[Label], index: Mapping[Label, int]) -> np.ndarray:
    return np.asarray([index[label] for label in labels], np.int64)


_Part = tuple[Mapping[str, Any], np.ndarray, Mapping[str, Any] | None, np.ndarray]


def _readout(base: Mapping[str, Any] | None, base_where: np.ndarray,
             devices: list[_Part]) -> dict[str, Any]:  # fmt: skip
    """The class means, counts and within-class variance of ``base`` (None: nothing yet) with
    each device's change since its origin pooled in; a device is (its state, where its rows go,
    its origin or None for nothing, where the origin's rows go)."""
    from .readout import MEAN_WINDOW, VAR_WINDOW

    first = devices[0][0]
    out: dict[str, Any] = {}
    for i in sorted(int(m.group(1)) for k in first if (m := _MEANS.match(k))):
        rows = max([_used(base, i, base_where)] + [max(_used(s, i, w), _used(o, i, ow))
                                                   for s, w, o, ow in devices])  # fmt: skip
        width = np.asarray(first[f"readout.{i}.means"]).shape[1]
        parts = [(*_means(s, i, rows, width, w), *_means(o, i, rows, width, ow))
                 for s, w, o, ow in devices]  # fmt: skip
        out[f"readout.{i}.means"], out[f"readout.{i}.counts"] = _running(
            _means(base, i, rows, width, base_where), parts, MEAN_WINDOW)  # fmt: skip
        var = [(*_var(s, i, width), *_var(o, i, width)) for s, _, o, _ in devices]
        pooled, n = _running(_var(base, i, width), var, VAR_WINDOW)
        out[f"readout.{i}.var"], out[f"readout.{i}.n"] = pooled, np.asarray(n, np.int64)
    return out


def _used(state: Mapping[str, Any] | None, i: int, where: np.ndarray) -> int:
    """The rows a readout layer's class means take in the fleet's order."""
    n = 0 if state is None else len(np.asarray(state[f"readout.{i}.counts"]))
    return int(where[:n].max()) + 1 if n else 0


def _means(state: Mapping[str, Any] | None, i: int, rows: int, width: int, where: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    if state is None:
        return np.zeros((rows, width)), np.zeros(rows, np.int64)
    return _rows(state, i, rows, where)


def _var(state: Mapping[str, Any] | None, i: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    if state is None:
        return np.zeros(width), np.zeros((), np.int64)
    return (np.asarray(state[f"readout.{i}.var"], np.float64),
            np.asarray(state[f"readout.{i}.n"], np.int64))  # fmt: skip


def _merge_readouts(
    base: Mapping[str, Any] | None,
    learning: Mapping[str, Update],
    weights: Mapping[str, float],
    labels: list[Label],
) -> dict[str, Any]:
    """The devices' class-mean readouts pooled class by class, each class's mean weighted by
    the samples it got (exact while a class has at most ``readout.MEAN_WINDOW``), as one readout
    that saw every sample would hold; hit rates averaged as the layers are. None if a device
    has no readout (it is off there)."""
    if not all("readout.hits" in u.state for u in learning.values()):
        return {}
    index = {label: i for i, label in enumerate(labels)}
    fleet = base if base is not None and "readout.hits" in base else None
    where = _where(list(fleet.get("labels", [])), index) if fleet is not None else (
        np.zeros(0, np.int64))  # fmt: skip
    devices: list[_Part] = [
        (u.state, _where(list(u.state.get("labels", [])), index),
         None if u.fresh else fleet, where)
        for u in learning.values()]  # fmt: skip
    out = _readout(fleet, where, devices)
    out["readout.hits"] = np.sum(
        [weights[n] * np.asarray(u.state["readout.hits"], np.float64)
         for n, u in learning.items()], axis=0)  # fmt: skip
    return out


def adopt(own: Mapping[str, Any], merged: Mapping[str, Any]) -> dict[str, Any]:
    """A device's state with the fleet's layers, statistics and labels; its replay memory keeps
    its samples, their class indices renumbered to the fleet's label order; its class-mean
    readout is the fleet's if the fleet pools them, else it starts again (its means belong to
    the layer it had)."""
    state = dict(own)
    fleet: list[Label] = list(merged["labels"])
    index = {label: i for i, label in enumerate(fleet)}
    mine = list(own.get("labels", []))
    for label in mine:
        if label not in index:  # learned after it sent its update: it goes after the fleet's
            index[label] = len(fleet)
            fleet.append(label)
    for key, value in merged.items():
        if key != "labels":
            state[key] = value.copy() if isinstance(value, np.ndarray) else value
    state["labels"] = fleet
    # The fleet's class-mean readout, if it pools them (``merge(readouts=True)``), replaces the
    # device's; else the device's means live in the space of its own last layer, which the
    # fleet's weights have just replaced, and know only its classes: they go, so the device
    # reports its class vectors until means of the merged layer predict better.
    if "readout.hits" not in merged:
        for key in [k for k in state if k.startswith("readout.")]:
            del state[key]
    for key in own:  # a slow window after a new class keeps the samples it had left to run
        if key.endswith("input_slow_until"):
            count = key.removesuffix("slow_until") + "count"
            left = int(own[key]) - int(own[count])
            if left > 0 and count in merged:
                state[key] = np.asarray(int(merged[count]) + left, dtype=np.int64)
    if "memory.y" in own and mine:
        remap = np.asarray([index[label] for label in mine], dtype=np.int64)
        y = np.asarray(own["memory.y"])
        state["memory.y"] = remap[y].astype(y.dtype) if len(y) else y.copy()
        for key in ("memory.seen", "memory.recent", "memory.last"):  # per class, label order
            if key in own:
                per_class = np.asarray(own[key])
                out = np.zeros(len(fleet), dtype=per_class.dtype)
                out[remap[: len(per_class)]] = per_class
                state[key] = out
    return state


def rebase(
    now: Mapping[str, Any], sent: Mapping[str, Any], fleet: Mapping[str, Any]
) -> dict[str, Any]:
    """A device's state ``now`` with what it learned since ``sent`` (its update that ``fleet``,
    the merged model, took in) put on top of the fleet's model: each weight is the fleet's plus
    the device's change since ``sent``; the input standardiser is the fleet's pooled exactly with
    what the device saw since (moving hidden statistics: the fleet's plus the change); a
    fleet that pools readouts: its class-mean readout pooled with the device's change since
    ``sent``; then ``adopt``. A device keeps learning while a round is merged: nothing it
    learned is lost."""
    moved: dict[str, Any] = {"labels": list(fleet["labels"])}
    for key in shared_keys(fleet):
        if key not in now or key not in sent:
            raise ModelError(f"the fleet's model has {key!r} and the device's has not "
                             "(the same --hidden and feature width on every device)")  # fmt: skip
        f = np.asarray(fleet[key])
        if _WEIGHT.match(key):
            a, b = np.asarray(now[key], np.float64), np.asarray(sent[key], np.float64)
            if a.shape != f.shape or b.shape != f.shape:
                raise ModelError(f"{key}: the device's shape {a.shape} is not the fleet's "
                                 f"{f.shape} (the same --hidden on every device)")  # fmt: skip
            moved[key] = (f.astype(np.float64) + (a - b)).astype(f.dtype)
        elif _VECTORS.match(key):
            mine = np.asarray(now[key])
            moved[key] = (mine if len(mine) > len(f) else f).copy()
    moving = fleet.get("config", now.get("config", {})).get("hidden_decay") is not None
    prefixes = sorted({m.group(1) for k in shared_keys(fleet) if (m := _STATS.match(k))})
    for prefix in prefixes:
        if moving and prefix != "scaler.":
            for part in ("count", "mean", "m2"):
                key = f"{prefix}{part}"
                change = np.asarray(now[key], np.float64) - np.asarray(sent[key], np.float64)
                moved[key] = (np.asarray(fleet[key], np.float64) + change).astype(
                    np.asarray(fleet[key]).dtype)  # fmt: skip
            continue
        n, mean, m2 = _pool(
            _stats(fleet, prefix), _since(_stats(now, prefix), _stats(sent, prefix))
        )
        moved[f"{prefix}count"] = np.asarray(n, np.int64)
        moved[f"{prefix}mean"], moved[f"{prefix}m2"] = mean, m2
    if "readout.hits" in fleet and "readout.hits" in now:
        ext = list(fleet["labels"])
        ext += [label for label in now.get("labels", []) if label not in set(ext)]
        index = {label: i for i, label in enumerate(ext)}
        mine = _where(list(now.get("labels", [])), index)
        origin = sent if "readout.hits" in sent else None
        moved.update(_readout(fleet, _where(list(fleet["labels"]), index),
                              [(now, mine, origin, mine)]))  # fmt: skip
        was = np.asarray(sent["readout.hits"], np.float64) if origin is not None else 0.0
        change = np.asarray(now["readout.hits"], np.float64) - was
        moved["readout.hits"] = np.asarray(fleet["readout.hits"], np.float64) + change
    return adopt(now, moved)
