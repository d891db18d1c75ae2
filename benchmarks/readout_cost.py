"""The head's cost per frame on backbone features, with and without the input readout (issue 11).

``SpelaMLP(hidden=(1024,), input_readout=W)`` (the frames defaults, ``features.
FRAME_MODEL_DEFAULTS``; W 0: off) learns N random 1280-d rows (EfficientNet-Lite0's width) of
10 classes, one ``predict_learn_one`` each, on one torch thread; the mean wall and CPU ms per
frame are printed beside the load average (the machine is shared: the figures are rough, the
CPU one steadier; compare the two rows).

    OPENBLAS_NUM_THREADS=1 nice -n 10 python -m benchmarks.readout_cost [N [WARM [W ...]]]
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import torch

from spela_stream.features import EFFICIENTNET_DIM, FRAME_MODEL_DEFAULTS
from spela_stream.model import SpelaMLP


def per_frame_ms(
    window: int, n: int = 2000, warm: int = 10, d: int = EFFICIENTNET_DIM, seed: int = 0
) -> tuple[float, float]:
    """Mean wall and CPU ms of one ``predict_learn_one`` over ``n`` rows, after ``warm`` rows
    not timed. On a shared machine the CPU figure is the steadier one. The readout refits its
    whitening at 8, 16, ..., 512 deviations, then every 500: the first 2,000 frames hold 10
    refits, a later 2,000 four (``warm`` 2000: the steady cost)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n + warm, d)).astype(np.float32)
    y = rng.integers(0, 10, n + warm)
    model = SpelaMLP(**{**FRAME_MODEL_DEFAULTS, "input_readout": window})
    for row, label in zip(X[:warm], y[:warm], strict=True):
        model.predict_learn_one(row, int(label))
    t0, c0 = time.perf_counter(), time.process_time()
    for row, label in zip(X[warm:], y[warm:], strict=True):
        model.predict_learn_one(row, int(label))
    return (time.perf_counter() - t0) / n * 1000, (time.process_time() - c0) / n * 1000


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    n = int(argv[0]) if argv else 2000
    warm = int(argv[1]) if len(argv) > 1 else 10
    windows = [int(w) for w in argv[2:]] or [0, int(FRAME_MODEL_DEFAULTS["input_readout"])]
    for w in windows:
        wall, cpu = per_frame_ms(w, n, warm)
        load = " ".join(f"{v:.2f}" for v in os.getloadavg())
        print(f"input_readout={w:<5d} hidden=(1024,) d={EFFICIENTNET_DIM} {n} after {warm}: "
              f"{wall:.2f} ms/frame wall, {cpu:.2f} CPU (load average {load})",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
