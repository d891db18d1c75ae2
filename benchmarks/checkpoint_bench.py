"""How long a checkpoint of a 784-1024-1024 float32 model takes to save and load.

    python -m benchmarks.checkpoint_bench                 # in a temporary directory
    python -m benchmarks.checkpoint_bench --dir . -n 30   # on another disk, more repeats

Saves go through ``CheckpointStore.save`` (WAL, synchronous=FULL: each save is fsynced) with
``keep=3``; figures are medians, printed as markdown.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from storage import CheckpointStore

HIDDEN = (1024, 1024)
N_FEATURES = 784
CAPACITY = 16


def model_state(seed: int = 0) -> dict[str, Any]:
    """A state shaped like ``SpelaMLP(hidden=[1024, 1024]).state_dict()`` after MNIST."""
    rng = np.random.default_rng(seed)
    state: dict[str, Any] = {
        "format": "spela-stream.model/1",
        "config": {"hidden": list(HIDDEN), "lr": 0.01, "seed": 0, "dtype": "float32"},
        "labels": list(range(10)),
        "feature_names": None,
        "n_features": N_FEATURES,
        "n_learned": 60_000,
        "scaler.count": np.asarray(60_000, dtype=np.int64),
        "scaler.mean": rng.random(N_FEATURES),
        "scaler.m2": rng.random(N_FEATURES),
    }
    d_in = N_FEATURES
    for i, d_out in enumerate(HIDDEN):
        state[f"layers.{i}.weight"] = rng.standard_normal((d_out, d_in), dtype=np.float32)
        state[f"layers.{i}.bias"] = rng.standard_normal(d_out, dtype=np.float32)
        state[f"layers.{i}.vectors"] = rng.standard_normal((CAPACITY, d_out), dtype=np.float32)
        for key in ("input_mean", "input_m2", "input_var"):
            state[f"layers.{i}.{key}"] = rng.random(d_out)
        d_in = d_out
    return state


def metric_state(n: int) -> dict[str, Any]:
    """Metric state of roughly ``20 * n`` bytes of JSON: a confusion matrix and a window."""
    rng = np.random.default_rng(1)
    return {
        "summary": {"accuracy": 0.97, "samples": 60_000},
        "confusion": {
            str(k): {str(j): int(rng.integers(100)) for j in range(10)} for k in range(10)
        },
        "window": [float(x) for x in rng.random(n)],
    }


def _ms(times: list[float]) -> str:
    return f"{1e3 * statistics.median(times):.1f}"


def main() -> None:
    """Time saves and loads and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="where the database goes")
    parser.add_argument("-n", type=int, default=15, help="repeats per figure")
    args = parser.parse_args()
    state = model_state()
    tensor_bytes = sum(v.nbytes for v in state.values() if isinstance(v, np.ndarray))
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "bench.db"
        rows = []
        with CheckpointStore(path) as store:
            run = store.create_run(None, state["config"], "builtin:mnist")
            for label, metrics in [("no metrics", None), ("~300 KB metrics", metric_state(15_000))]:
                saves, loads = [], []
                for k in range(args.n):
                    t = time.perf_counter()
                    store.save(
                        run, state=state, samples=k, source="builtin:mnist", position=k,
                        where=f"record {k}", metrics=metrics,
                        history=[{"samples": k, "accuracy": 0.9}], keep=3,
                    )  # fmt: skip
                    saves.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    ck = store.load(run)
                    loads.append(time.perf_counter() - t)
                rows.append((label, _ms(saves), _ms(loads), max(saves), ck.info.bytes))
            size = path.stat().st_size
            wal_size = path.with_name(path.name + "-wal").stat().st_size
    print(f"784-{'-'.join(map(str, HIDDEN))} float32 model: {len(state)} state keys, "
          f"{tensor_bytes / 2**20:.2f} MiB of arrays; median of {args.n}; keep=3\n")  # fmt: skip
    print("| checkpoint | save ms | load ms | slowest save ms | checkpoint bytes |")
    print("|---|---:|---:|---:|---:|")
    for label, save, load, slowest, nbytes in rows:
        print(f"| {label} | {save} | {load} | {1e3 * slowest:.1f} | {nbytes:,} |")
    print(f"\nfile with 3 checkpoints kept: {size / 2**20:.1f} MiB, WAL {wal_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
