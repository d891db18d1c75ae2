"""The compiled per-sample step: ``predict_learn_one`` through the numba kernels (``kernels``).

The layers keep their torch tensors (so ``state_dict``, ``learn_many``, replay and every other
path see the same weights); on CPU a float32 tensor's ``.numpy()`` is a view of its memory, so the
kernels update the model in place. The step is the torch path's, sample for sample: normalise
the layer's input, forward, score against the known classes' vectors, update with the drift
boost, then fold the raw input into the layer's statistics; the next layer gets the output as it
was before the update.

``AVAILABLE`` says whether numba imports; ``SpelaMLP`` takes this path by default on CPU for a
float32 model when it does, and torch's otherwise (CUDA, float64, micro-batches).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from .rule import LEAKY_SLOPE

if TYPE_CHECKING:
    from .layer import SpelaLayer

# numba missing, or no cache locator (a read-only install without NUMBA_CACHE_DIR): the torch
# path serves
try:
    from . import kernels
except (ImportError, RuntimeError):
    kernels = None  # type: ignore[assignment]

AVAILABLE = kernels is not None
# The default takes the compiled step while no layer holds more weights than this: the kernels'
# forward loop is about 4x slower than BLAS's sgemv on 1024 x 1024 (487 against 122 us), so a
# wide model keeps torch's path, where per-sample overhead is a small share anyway.
MAX_WEIGHTS = 512 * 512


class Buffers:
    """Per-layer scratch vectors (z, y, g and the normalised input), reused across samples."""

    def __init__(self, layers: list[SpelaLayer]) -> None:
        self.shapes = [(layer.d_in, layer.d_out) for layer in layers]
        self.xin = [np.empty(d_in, dtype=np.float32) for d_in, _ in self.shapes]
        self.z = [np.empty(d_out, dtype=np.float32) for _, d_out in self.shapes]
        self.g = [np.empty(d_out, dtype=np.float32) for _, d_out in self.shapes]

    def fits(self, layers: list[SpelaLayer]) -> bool:
        return self.shapes == [(layer.d_in, layer.d_out) for layer in layers]


def step(
    layers: list[SpelaLayer],
    buffers: Buffers,
    x: np.ndarray,
    k: int,
    known: int,
    score: bool,
    lrs: list[float],
) -> tuple[list[np.ndarray], np.ndarray]:
    """Learn one float32 sample x (d_in,) of class k on every layer; returns each layer's scores
    (1, known) before its update (empty when not ``score``) and the last layer's output (d_out,),
    also from before the update."""
    assert kernels is not None
    out_scores: list[np.ndarray] = []
    h = x
    for i, layer in enumerate(layers):
        h_in, y, s = forward_one(layer, buffers, i, h, known if score else -1)
        if s is not None:
            out_scores.append(s)
        w, b = layer.weight.numpy(), layer.bias.numpy()
        v = layer.vectors.numpy()[k]
        kernels.update(w, b, h_in, buffers.z[i], y, v, lrs[i], LEAKY_SLOPE, buffers.g[i])
        if layer.input_norm is not None:
            _observe(layer.input_norm, h)
        h = y
    return out_scores, h


def forward_one(
    layer: SpelaLayer, buffers: Buffers, i: int, h: np.ndarray, n_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Layer i's normalised input, output y (a fresh array) and scores (1, n_classes) for one
    float32 raw input h (scores None when n_classes < 0); z is left in ``buffers.z[i]``."""
    assert kernels is not None
    norm = layer.input_norm
    if norm is None:
        h_in = h
    elif norm.count == 0:
        h_in = buffers.xin[i]
        h_in.fill(0.0)
    else:
        h_in = buffers.xin[i]
        denom = norm.weight if norm.decay is not None else float(norm.count)
        kernels.normalise(h, norm.mean.numpy(), norm.m2.numpy(), denom, h_in)
    y = np.empty(layer.d_out, dtype=np.float32)  # handed on: a fresh array each sample
    kernels.forward(layer.weight.numpy(), layer.bias.numpy(), h_in, LEAKY_SLOPE, buffers.z[i], y)
    if n_classes < 0:
        return h_in, y, None
    s = np.empty((1, n_classes), dtype=np.float32)
    kernels.scores(layer.vectors.numpy(), y, n_classes, s[0])
    return h_in, y, s


def _observe(norm: object, h: np.ndarray) -> None:
    """TensorStandardiser.update for one row, its scalars here and its vectors compiled."""
    from .scaling import TensorStandardiser

    assert isinstance(norm, TensorStandardiser) and kernels is not None
    norm._cache = None
    mean, m2 = norm.mean.numpy(), norm.m2.numpy()
    if norm.decay is not None:
        beta = norm._decay_at(norm.count)
        c0 = norm.weight
        c1 = beta * c0 + (1.0 - beta)
        kernels.ema_update(mean, m2, h, beta * c0 / c1, (1.0 - beta) / c1, beta)
        norm.weight = c1
        norm.count += 1
        return
    norm.count += 1
    kernels.welford_update(mean, m2, h, norm.count)


def layer_lrs(layers: list[SpelaLayer], lr: float, reference: int, boost: float) -> list[float]:
    return [lr * math.sqrt(layer.d_out / reference) * boost for layer in layers]
