"""Calibration of the reported confidence, prequentially, with and without ``calibrate``.

    python -m benchmarks.calibration_bench --stream elec2          # the whole stream
    python -m benchmarks.calibration_bench --stream mnist --limit 10000

Default ``SpelaMLP()`` otherwise, one torch thread. Per setting: accuracy, expected calibration
error (15 bins, ``calibration.CalibrationError``), the median confidence of the wrong predictions
and the share of them above 0.99. Seeded and exact: the figures repeat on this machine.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from benchmarks.streams import load_stream
from spela_stream.calibration import CalibrationError
from spela_stream.model import SpelaMLP


def measure(X: np.ndarray, y: list, calibrate: bool) -> dict[str, float]:
    """Prequential figures of one pass over the stream."""
    model = SpelaMLP(calibrate=calibrate)
    ece = CalibrationError()
    wrong: list[float] = []
    right = 0
    for x, label in zip(X, y, strict=True):
        p = model.predict_learn_one(x, label)
        if p is None or p.label is None:
            continue
        ece.update(p.confidence, p.label == label)
        right += p.label == label
        if p.label != label:
            wrong.append(p.confidence)
    n = int(ece.count.sum())
    return {
        "scored": n,
        "accuracy": right / n,
        "ece": ece.get(),
        "wrong_median": float(np.median(wrong)),
        "wrong_above_0.99": float(np.mean(np.array(wrong) > 0.99)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stream", default="elec2", help="elec2, mnist, letter, optdigits")
    ap.add_argument("--limit", type=int, default=None, help="first N samples only")
    ap.add_argument("--calibrate", choices=["both", "on", "off"], default="both")
    a = ap.parse_args()
    torch.set_num_threads(1)
    X, y = load_stream(a.stream, a.limit)
    settings = {"both": (False, True), "on": (True,), "off": (False,)}[a.calibrate]
    for calibrate in settings:
        r = measure(X, y, calibrate)
        print(
            f"{a.stream} calibrate={calibrate}: {r['scored']} scored, accuracy "
            f"{r['accuracy']:.4f}, ECE {r['ece']:.4f}, wrong predictions: median confidence "
            f"{r['wrong_median']:.3f}, {r['wrong_above_0.99']:.1%} above 0.99",
            flush=True,
        )


if __name__ == "__main__":
    main()
