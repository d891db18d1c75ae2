"""Class-vector growth: seconds to add 10,000 classes one at a time, and spread against Thomson.

    PYTHONPATH=. python -m benchmarks.classvec_bench [--classes N]

Prints to stdout: one line per width with the seconds ``SpelaLayer.ensure_classes`` took over
N classes added one at a time (capacity 16, so all but 16 come from growth), then the minimum
angle between distinct vectors for n = 16, 32, 64 at widths 8 and 64, grown one at a time from
capacity 16 beside a full Thomson solve of n points. Timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from spela_stream.class_vectors import ClassVectors, thomson
from spela_stream.layer import SpelaLayer


def min_angle(v: np.ndarray) -> float:
    """Smallest angle between distinct rows, in degrees."""
    g = v @ v.T
    np.fill_diagonal(g, -np.inf)
    return float(np.degrees(np.arccos(min(1.0, float(g.max())))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=10_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for width in (64, 1024):
        layer = SpelaLayer(8, width, capacity=16, seed=0)
        start = time.perf_counter()
        for n in range(1, args.classes + 1):
            layer.ensure_classes(n)
        took = time.perf_counter() - start
        print(f"width {width}: {args.classes} classes one at a time in {took:.3f} s")
    for dim in (8, 64):
        for n in (16, 32, 64):
            cv = ClassVectors(dim, capacity=16, seed=0)
            for k in range(1, n + 1):
                cv.ensure(k)
            grown = min_angle(cv.vectors[:n])
            full = min_angle(thomson(n, dim, seed=0))
            print(f"dim {dim} n {n}: min angle grown {grown:.2f} deg, Thomson {full:.2f} deg")


if __name__ == "__main__":
    main()
