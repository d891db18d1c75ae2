"""What the continual parts cost per sample on the small model (issue 11: at most 1.5x).

``SpelaMLP(hidden=(64, 64))`` on 8 features and 10 classes (random normal rows, random labels,
the stream of ``core_bench --per-sample``), ``predict_learn_one`` on the compiled path, with the
defaults against the continual parts off (``memory=0, readout=False, adapt=False,
calibrate=False``): CPU microseconds per sample (``time.process_time``), the least of RUNS
passes of N samples after a WARM-sample warm-up, the two models taking turns pass by pass, on
one thread, with the load average beside them (the machine may be shared: the figures are
rough, the ratio steadier). ``--profile`` prints cProfile's top calls of one defaults run.

    OPENBLAS_NUM_THREADS=1 python -m benchmarks.continual_cost [--n 1500] [--warm 200] [--runs 3]
    OPENBLAS_NUM_THREADS=1 python -m benchmarks.continual_cost --profile
    OPENBLAS_NUM_THREADS=1 python -m benchmarks.continual_cost --shape 784-1024-1024  # MNIST's

``--shape D-H1-H2...``: another model (D features, hidden widths H1, H2, ...), the same stream.
"""

from __future__ import annotations

import argparse
import cProfile
import math
import os
import pstats
import time
from typing import Any

import numpy as np
import torch

from spela_stream import SpelaMLP

OFF: dict[str, Any] = {"memory": 0, "readout": False, "adapt": False, "calibrate": False}


def stream(n: int, d: int = 8, classes: int = 10, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    gen = np.random.default_rng(seed)
    return gen.standard_normal((n, d)), gen.integers(0, classes, n).tolist()


SMALL = (8, 64, 64)


def parse_shape(spec: str) -> tuple[int, ...]:
    """``"784-1024-1024"`` -> (784, 1024, 1024): the input width, then the hidden widths."""
    try:
        shape = tuple(int(v) for v in spec.split("-"))
    except ValueError:
        shape = ()
    if len(shape) < 2 or min(shape) < 1:
        raise argparse.ArgumentTypeError(
            f"--shape wants D-H1[-H2...] of positive integers, e.g. 784-1024-1024; got {spec!r}"
        )
    return shape


def cpu_us(
    configs: list[dict[str, Any]], n: int, warm: int, runs: int = 3, shape: tuple[int, ...] = SMALL
) -> list[float]:
    """Least CPU microseconds per ``predict_learn_one`` of each config over ``runs`` passes of n
    samples, after ``warm`` samples (the kernels load then); each pass carries on the same
    model, and the configs take turns pass by pass (a shared machine's load falls on each)."""
    X, y = stream(warm + n, d=shape[0])
    models = [SpelaMLP(hidden=shape[1:], **params) for params in configs]
    for model in models:
        for xi, yi in zip(X[:warm], y[:warm], strict=True):
            model.predict_learn_one(xi, yi)
    best = [math.inf] * len(models)
    for _ in range(runs):
        for i, model in enumerate(models):
            c0 = time.process_time()
            for xi, yi in zip(X[warm:], y[warm:], strict=True):
                model.predict_learn_one(xi, yi)
            best[i] = min(best[i], (time.process_time() - c0) / n)
    assert all(model.uses_compiled for model in models)
    return [b * 1e6 for b in best]


def profile(n: int, warm: int, shape: tuple[int, ...] = SMALL) -> None:
    X, y = stream(warm + n, d=shape[0])
    model = SpelaMLP(hidden=shape[1:])
    for xi, yi in zip(X[:warm], y[:warm], strict=True):
        model.predict_learn_one(xi, yi)
    prof = cProfile.Profile()
    prof.enable()
    for xi, yi in zip(X[warm:], y[warm:], strict=True):
        model.predict_learn_one(xi, yi)
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(25)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1500)
    p.add_argument("--warm", type=int, default=200)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--shape", type=parse_shape, default=SMALL, help="D-H1-H2 (default 8-64-64)")
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.profile:
        profile(a.n, a.warm, a.shape)
        return
    full, off = cpu_us([{}, OFF], a.n, a.warm, a.runs, a.shape)
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    name = "-".join(map(str, a.shape))
    print(f"{name} defaults {full:.1f} us, parts off {off:.1f} us: {full / off:.2f}x "
          f"(CPU, least of {a.runs} x {a.n} after {a.warm}; load average {load})")  # fmt: skip


if __name__ == "__main__":
    main()
