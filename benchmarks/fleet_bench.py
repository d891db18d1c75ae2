"""A fleet of SPELA devices merged by ``spela_stream.fleet`` (FedAvg), against one device that
sees everything and against devices learning alone. In process: no Flower here (see below).

    python -m benchmarks.fleet_bench                   # 4 devices, 4,000 MNIST digits, 10 rounds
    python -m benchmarks.fleet_bench --devices 8 --n 2000 --rounds 5

The first ``--n`` MNIST test digits are the stream, the next 1,000 the held-out set. Splits:
``iid`` (digit i to device i mod D) and ``skewed`` (digit class k to device k mod D: each device
sees 2-3 of the 10 classes). Each round every device learns, test-then-train, its next 1/R of
its share, from the fleet's model; the server merges (``fleet.merge``) and every device adopts
the merge. The fleet declares the 10 labels up front (the server owns the order). Figures:
prequential accuracy (every device's predictions before learning, pooled), held-out accuracy
of the final fleet model (isolated: the mean over the devices' own models), bytes each round
(up: the devices' shared arrays; down: the merged model to each device), and the wall time of
a round (indicative: the machine is shared). One torch thread.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch

from spela_stream.datasets import load_mnist
from spela_stream.fleet import Update, adopt, merge, shared_keys
from spela_stream.model import SpelaMLP

HELD_OUT = 1000


def fresh(hidden: tuple[int, ...]) -> dict[str, Any]:
    state = SpelaMLP(hidden=hidden, seed=0).state_dict()
    state["labels"] = list(range(10))  # the fleet's label order, declared up front
    return state


def learn(state: dict[str, Any], X: np.ndarray, y: np.ndarray) -> tuple[dict[str, Any], int]:
    """Test-then-train ``X, y`` from ``state``; the new state and the correct predictions."""
    model = SpelaMLP.from_state(state)
    correct = 0
    for row, label in zip(X, y.tolist(), strict=True):
        correct += model.predict_one(row) == label
        model.learn_one(row, label)
    return model.state_dict(), correct


def held_out(state: dict[str, Any], X: np.ndarray, y: np.ndarray) -> float:
    model = SpelaMLP.from_state(state)
    return float(np.mean(np.asarray(model.predict_many(X)) == y))


def split(y: np.ndarray, devices: int, how: str) -> list[np.ndarray]:
    if how == "iid":
        return [np.arange(d, len(y), devices) for d in range(devices)]
    return [np.flatnonzero(y % devices == d) for d in range(devices)]


def fleet_run(X: np.ndarray, y: np.ndarray, Xt: np.ndarray, yt: np.ndarray, how: str,
              devices: int, rounds: int, hidden: tuple[int, ...]) -> dict[str, Any]:  # fmt: skip
    shares = split(y, devices, how)
    states = [fresh(hidden) for _ in range(devices)]
    fleet: dict[str, Any] | None = None
    correct = 0
    up = down = 0
    t0 = time.perf_counter()
    for r in range(rounds):
        updates = {}
        for d, idx in enumerate(shares):
            part = idx[r::rounds]
            states[d], c = learn(states[d], X[part], y[part])
            correct += c
            updates[f"device-{d}"] = Update(states[d], len(part))
        merged = merge(fleet, updates)
        fleet = merged.state
        up += merged.bytes_in
        down += devices * sum(v.nbytes for k, v in fleet.items() if k != "labels")
        states = [adopt(s, fleet) for s in states]
    wall = time.perf_counter() - t0
    return {"run": f"fleet-{how}", "devices": devices, "rounds": rounds,
            "prequential": correct / len(y), "held_out": held_out(states[0], Xt, yt),
            "bytes_up_per_round": up // rounds, "bytes_down_per_round": down // rounds,
            "round_s": wall / rounds}  # fmt: skip


def isolated_run(X: np.ndarray, y: np.ndarray, Xt: np.ndarray, yt: np.ndarray, how: str,
                 devices: int, hidden: tuple[int, ...]) -> dict[str, Any]:  # fmt: skip
    correct = 0
    scores = []
    for idx in split(y, devices, how):
        state, c = learn(fresh(hidden), X[idx], y[idx])
        correct += c
        scores.append(held_out(state, Xt, yt))
    return {"run": f"isolated-{how}", "devices": devices, "prequential": correct / len(y),
            "held_out": float(np.mean(scores))}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--hidden", default="256,256")
    args = parser.parse_args()
    torch.set_num_threads(1)
    hidden = tuple(int(h) for h in args.hidden.split(","))
    X, y = load_mnist(args.n + HELD_OUT)
    X, y, Xt, yt = X[: args.n], y[: args.n], X[args.n :], y[args.n :]
    state, c = learn(fresh(hidden), X, y)
    rows = [{"run": "one-device", "devices": 1, "prequential": c / len(y),
             "held_out": held_out(state, Xt, yt),
             "model_bytes": sum(state[k].nbytes for k in shared_keys(state))}]  # fmt: skip
    for how in ("iid", "skewed"):
        rows.append(fleet_run(X, y, Xt, yt, how, args.devices, args.rounds, hidden))
        rows.append(isolated_run(X, y, Xt, yt, how, args.devices, hidden))
    for row in rows:
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))


if __name__ == "__main__":
    main()
