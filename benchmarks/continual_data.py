"""The continual benchmark's streams: class-incremental data sets and River's drift generators.

Class-incremental sets are ``(X, y)`` with ``y`` int ``0..C-1`` (labels sorted: digits by value,
letters A..Z), in file order; ``benchmarks.continual.class_incremental`` cuts them into stages.
``camera`` is the MNIST test set rendered as 112 px RGB frames, as ``benchmarks.camera_bench``
renders them, through the frozen EfficientNet-Lite0 on one torch thread: 1280-d features, cached
in ``benchmarks/.cache`` (git-ignored) under a name that carries the frame size and the count.

Drift streams are River generators, seeded, materialised as float32 arrays (feature dicts in the
generator's key order): ``drift_at`` is where the concept changes (the middle of a gradual
change), ``width`` how long the change takes (1: abrupt), ``blocks`` the block length of a
recurring stream.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CACHE = Path(__file__).resolve().parent / ".cache"
CAMERA_SIZE = 112


def _labels(y: list[Any]) -> np.ndarray:
    order = {c: i for i, c in enumerate(sorted(set(y)))}
    return np.array([order[v] for v in y], dtype=np.int64)


def load_class_incremental(name: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``mnist``, ``optdigits``, ``letter`` or ``camera``: (X float32, y int64 0..C-1)."""
    if name == "camera":
        return camera_features(limit)
    if name == "mnist":
        from spela_stream.datasets import load_mnist

        return load_mnist(limit)
    from benchmarks.streams import load_stream

    X, y = load_stream(name, limit)
    return X, _labels(y)


def camera_features(limit: int | None = None, cache: Path = CACHE) -> tuple[np.ndarray, np.ndarray]:
    """MNIST test frames through the frozen EfficientNet-Lite0: (n, 1280) float32 and labels."""
    from spela_stream.datasets import load_mnist

    X, y = load_mnist(limit)
    path = cache / f"mnist-lite0-{CAMERA_SIZE}px-{len(y)}.npy"
    # the backbone is frozen and per frame: a longer cached run holds ours as its prefix
    for p in sorted(cache.glob(f"mnist-lite0-{CAMERA_SIZE}px-*.npy")):
        feats = np.load(p, mmap_mode="r")
        if feats.shape[0] >= len(y) and feats.shape[1:] == (1280,):
            return np.array(feats[: len(y)]), y
    feats = embed_frames(X, "efficientnet-lite0")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")  # not matched by the glob above until complete
    with tmp.open("wb") as fh:
        np.save(fh, feats)
    tmp.replace(path)
    return feats, y


def embed_frames(X: np.ndarray, backbone: str, size: int = CAMERA_SIZE) -> np.ndarray:
    """MNIST rows rendered as camera frames and embedded by ``backbone`` on one thread."""
    import torch

    from benchmarks.camera_bench import render
    from spela_stream.features import make_backbone
    from spela_stream.sources.frames import MAX_BATCH

    torch.set_num_threads(1)
    net = make_backbone(backbone, size, threads=1)
    out = []
    t0 = time.perf_counter()
    for i in range(0, len(X), MAX_BATCH):
        out.append(net.embed(render(X[i : i + MAX_BATCH], size)))
        if (i // MAX_BATCH) % 50 == 0:
            print(
                f"  camera: embedded {i + len(out[-1]):,}/{len(X):,} frames "
                f"({time.perf_counter() - t0:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    return np.concatenate(out).astype(np.float32)


# ---------------------------------------------------------------------------- drift


@dataclass(frozen=True)
class DriftStream:
    """A seeded River stream with a known change: where, how wide, or recurring blocks."""

    name: str
    title: str
    n: int
    drift_at: int | None
    width: int
    blocks: int | None
    make: Callable[[int], Iterator[tuple[dict[Any, Any], Any]]]


def _switch(a: Any, b: Any, width: int) -> Callable[[int], Iterator[Any]]:
    """``a`` then ``b`` from the middle on; a gradual change (``width > 1``) is River's
    ``ConceptDriftStream`` (a sigmoid mix; its ``width=1`` overflows, so abrupt is a plain cut)."""
    from river.datasets import synth

    def make(n_total: int) -> Iterator[Any]:
        if width > 1:
            mix = synth.ConceptDriftStream(a(), b(), position=n_total // 2, width=width, seed=7)
            yield from mix.take(n_total)
            return
        yield from a().take(n_total // 2)
        yield from b().take(n_total - n_total // 2)

    return make


def _alternate(a: Any, b: Any, block: int) -> Callable[[int], Iterator[Any]]:
    def make(n_total: int) -> Iterator[Any]:
        gens = [iter(a()), iter(b())]
        for i in range(n_total):
            yield next(gens[(i // block) % 2])

    return make


def drift_streams(
    n: int = 50_000, recurring_n: int = 40_000, block: int = 5_000
) -> dict[str, DriftStream]:
    """The drift streams of issue 11, by name (the concept changes at ``n // 2``)."""
    from river.datasets import synth

    def sea(v: int, s: int) -> Callable[[], Any]:
        return lambda: synth.SEA(variant=v, seed=s)

    def agrawal(f: int, s: int) -> Callable[[], Any]:
        return lambda: synth.Agrawal(classification_function=f, seed=s)

    def rbf(m: int) -> Callable[[], Any]:
        return lambda: synth.RandomRBFDrift(
            seed_model=m, seed_sample=m, n_classes=2, n_features=10, n_centroids=50,
            change_speed=0.0001, n_drift_centroids=10,
        )  # fmt: skip

    def led(k: int) -> Callable[[], Any]:
        return lambda: synth.LEDDrift(
            seed=3, noise_percentage=0.1, irrelevant_features=True, n_drift_features=k
        )

    h, w = n // 2, n // 10
    rows = [
        DriftStream("sea-abrupt", "SEA, variant 0 -> 3, abrupt", n, h, 1, None,
                    _switch(sea(0, 1), sea(3, 2), 1)),
        DriftStream("sea-gradual", f"SEA, variant 0 -> 3, sigmoid over {w:,} samples", n, h, w,
                    None, _switch(sea(0, 1), sea(3, 2), w)),
        DriftStream("agrawal", "Agrawal, function 0 -> 2, abrupt", n, h, 1, None,
                    _switch(agrawal(0, 1), agrawal(2, 2), 1)),
        DriftStream("rbf", "RandomRBFDrift 10 features, 2 classes, new model, abrupt", n, h, 1,
                    None, _switch(rbf(1), rbf(2), 1)),
        DriftStream("led", "LEDDrift 24 features, 10% noise, 0 -> 7 drifting features", n, h, 1,
                    None, _switch(led(0), led(7), 1)),
        DriftStream("recurring", f"Agrawal functions 0 / 4 alternating every {block:,}",
                    recurring_n, None, 1, block, _alternate(agrawal(0, 1), agrawal(4, 2), block)),
    ]  # fmt: skip
    return {r.name: r for r in rows}


def materialise(stream: DriftStream) -> tuple[np.ndarray, np.ndarray]:
    """The stream as (X float32 (n, d), y int64 0..C-1 by sorted label)."""
    xs, ys = [], []
    for x, y in stream.make(stream.n):
        xs.append([float(v) for v in x.values()])
        ys.append(y)
    return np.asarray(xs, dtype=np.float32), _labels(ys)
