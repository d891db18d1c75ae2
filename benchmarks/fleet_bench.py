"""A fleet of SPELA devices merged by ``spela_stream.fleet`` (FedAvg), against one device that
sees everything and against devices learning alone; in process, or (``--flower``) through real
Flower processes: ``spela-stream fleet server`` (a SuperLink and the ServerApp) and one
``spela-stream fleet device`` (a learner and its SuperNode) per device, on 127.0.0.1.

    python -m benchmarks.fleet_bench                   # 4 devices, 4,000 MNIST digits, 10 rounds
    python -m benchmarks.fleet_bench --devices 8 --n 2000 --rounds 5
    python -m benchmarks.fleet_bench --flower --split iid      # the same fleet over Flower
    python -m benchmarks.fleet_bench --split skewed --pool-readouts    # readouts pooled too
    python -m benchmarks.fleet_bench --merge-devices 64 --hidden 1024,1024   # the merge, timed

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
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
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
              devices: int, rounds: int, hidden: tuple[int, ...],
              readouts: bool = False) -> dict[str, Any]:  # fmt: skip
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
        merged = merge(fleet, updates, readouts=readouts)
        fleet = merged.state
        up += merged.bytes_in
        down += devices * sum(v.nbytes for k, v in fleet.items() if k != "labels")
        states = [adopt(s, fleet) for s in states]
    wall = time.perf_counter() - t0
    final = states[0]
    row = {"run": f"fleet-{how}" + ("-pooled-readouts" if readouts else ""), "devices": devices,
           "rounds": rounds}  # fmt: skip
    if readouts:  # the held-out set read by the pooled class means alone
        row["held_out_means"] = held_out({**final, "readout.hits": np.array([[0.0, 1.0]])}, Xt, yt)
    return {**row,
            "prequential": correct / len(y), "held_out": held_out(final, Xt, yt),
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


def flower_run(X: np.ndarray, y: np.ndarray, Xt: np.ndarray, yt: np.ndarray, how: str,
               devices: int, rounds: int, hidden: tuple[int, ...]) -> dict[str, Any]:  # fmt: skip
    """The fleet through Flower's deployment engine: each device's share in a CSV, paced to
    1/R of it a round (``--per-round``), so every round merges what the in-process fleet's
    does; the held-out figure is device 0's final model (the fleet's last merge: its stream
    ended with the last round)."""
    from spela_stream.fleet_procs import free_port
    from storage import CheckpointStore

    folder = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    labels = ",".join(str(k) for k in range(10))
    port = free_port()
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        err = (folder / f"{len(procs)}.err").open("w")
        proc = subprocess.Popen([sys.executable, "-m", "cli.app", "fleet", *args], cwd=folder,
                                env=env, stdout=subprocess.PIPE, stderr=err, text=True,
                                start_new_session=True)  # fmt: skip
        procs.append(proc)
        return proc

    try:
        server = start("server", "--dir", "fleet", "--port", str(port), "--rounds", str(rounds),
                       "--min-devices", str(devices), "--labels", labels,
                       "--round-timeout", "300")  # fmt: skip
        hid = ",".join(str(h) for h in hidden)
        for d, idx in enumerate(split(y, devices, how)):
            with (folder / f"d{d}.csv").open("w") as fh:
                for i in idx:
                    fh.write(",".join(f"{v:g}" for v in X[i]) + f",{y[i]}\n")
            start("device", "--superlink", f"127.0.0.1:{port}", "--name", f"d{d}", "--source",
                  f"d{d}.csv", "--db", f"d{d}.db", "--hidden", hid, "--labels", labels,
                  "--per-round", str(-(-len(idx) // rounds)), "--every", "100000")  # fmt: skip
        assert server.stdout is not None
        rows = [json.loads(line) for line in server.stdout]
        reports = [json.loads(p.communicate(timeout=600)[0].splitlines()[-1]) for p in procs[1:]]
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
    with CheckpointStore(folder / "d0.db", create=False, readonly=True) as store:
        state = store.load("d0").state
    merged = [r for r in rows if "round" in r and "event" not in r]
    seconds = float(np.mean([r["seconds"] for r in merged]))
    correct = sum(round(r["accuracy"] * r["scored"]) for r in reports)
    return {"run": f"flower-{how}", "devices": devices, "rounds": len(merged),
            "prequential": correct / len(y), "held_out": held_out(state, Xt, yt),
            "bytes_up_per_round": int(np.mean([r["bytes_up"] for r in merged[1:]])),
            "bytes_down_per_round": int(np.mean([r["bytes_down"] for r in merged[1:]])),
            "round_s": seconds, "rounds_per_hour": 3600 / seconds}  # fmt: skip


def merge_cost(devices: int, hidden: tuple[int, ...]) -> dict[str, Any]:
    """The server's merge of ``devices`` updates of one model's size (each a copy of a model
    that learned 200 digits, its weights moved by noise, its statistics by 50 samples), timed:
    seconds per device, and bytes in per device (what 10,000 devices would cost, on paper)."""
    X, y = load_mnist(250)
    base, _ = learn(fresh(hidden), X[:200], y[:200])
    rng = np.random.default_rng(0)
    updates = {}
    for d in range(devices):
        state = dict(base)
        for key in shared_keys(base):
            if key.endswith(("weight", "bias")):
                state[key] = base[key] + rng.normal(scale=1e-3, size=base[key].shape).astype(
                    base[key].dtype)  # fmt: skip
        state["scaler.count"] = np.asarray(int(base["scaler.count"]) + 50)
        updates[f"d{d}"] = Update(state, 50)
    t0 = time.perf_counter()
    merged = merge(base, updates)
    wall = time.perf_counter() - t0
    return {"run": "merge-cost", "devices": devices, "merge_s": wall,
            "merge_s_per_device": wall / devices, "bytes_in_per_device": merged.bytes_in // devices,
            "load": os.getloadavg()[0]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--hidden", default="256,256")
    parser.add_argument("--flower", action="store_true", help="the fleet over real Flower")
    parser.add_argument("--split", choices=("iid", "skewed", "both"), default="both")
    parser.add_argument(
        "--pool-readouts", action="store_true", help="also a fleet that pools class-mean readouts"
    )
    parser.add_argument("--merge-devices", type=int, default=0,
                        help="only time the server's merge of this many updates")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(1)
    hidden = tuple(int(h) for h in args.hidden.split(","))
    if args.merge_devices:
        row = merge_cost(args.merge_devices, hidden)
        print(json.dumps({k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()}))
        return
    X, y = load_mnist(args.n + HELD_OUT)
    X, y, Xt, yt = X[: args.n], y[: args.n], X[args.n :], y[args.n :]
    state, c = learn(fresh(hidden), X, y)
    rows = [{"run": "one-device", "devices": 1, "prequential": c / len(y),
             "held_out": held_out(state, Xt, yt),
             "model_bytes": sum(state[k].nbytes for k in shared_keys(state))}]  # fmt: skip
    for how in ("iid", "skewed") if args.split == "both" else (args.split,):
        if args.flower:
            rows.append(flower_run(X, y, Xt, yt, how, args.devices, args.rounds, hidden))
        rows.append(fleet_run(X, y, Xt, yt, how, args.devices, args.rounds, hidden))
        if args.pool_readouts:
            rows.append(fleet_run(X, y, Xt, yt, how, args.devices, args.rounds, hidden, True))
        rows.append(isolated_run(X, y, Xt, yt, how, args.devices, hidden))
    for row in rows:
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))


if __name__ == "__main__":
    main()
