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


@dataclass(frozen=True)
class Update:
    """A device's state after a round, and the samples it learned since it took the fleet's."""

    state: Mapping[str, Any]
    learned: int


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


def shared_keys(state: Mapping[str, Any]) -> list[str]:
    """The keys a fleet shares: layer weights, biases, class vectors, standardiser statistics."""
    return [k for k in state if _WEIGHT.match(k) or _STATS.match(k) or _VECTORS.match(k)]


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


def merge(base: Mapping[str, Any] | None, updates: Mapping[str, Update]) -> Merged:
    """The fleet's model after a round: ``base`` is the state the devices started from (None
    for the first round: every device started from scratch), ``updates`` the devices'."""
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
    for key in keys:
        arrays = {n: np.asarray(u.state[key]) for n, u in learning.items()}
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
        for u in updates.values():
            pooled = _pool(pooled, _since(_stats(u.state, prefix), start))
        state[f"{prefix}count"] = np.asarray(pooled[0], np.int64)
        state[f"{prefix}mean"], state[f"{prefix}m2"] = pooled[1], pooled[2]
        if moving and prefix != "scaler.":  # EMAs: a weighted average, as the layers
            for part in ("mean", "m2"):
                state[f"{prefix}{part}"] = np.sum(
                    [w * np.asarray(learning[n].state[f"{prefix}{part}"], np.float64)
                     for n, w in weights.items()], axis=0,
                )  # fmt: skip
    return Merged(state, labels, total, len(learning), misaligned, bytes_in)


def adopt(own: Mapping[str, Any], merged: Mapping[str, Any]) -> dict[str, Any]:
    """A device's state with the fleet's layers, statistics and labels; its replay memory keeps
    its samples, their class indices renumbered to the fleet's label order."""
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
        for key in ("memory.seen", "memory.recent"):  # per class, in label order
            if key in own:
                per_class = np.asarray(own[key])
                out = np.zeros(len(fleet), dtype=per_class.dtype)
                out[remap[: len(per_class)]] = per_class
                state[key] = out
    return state
