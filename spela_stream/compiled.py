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
import torch

from .calibration import GRID, LOG_GRID, LOG_STEP, OnlineTemperature
from .readout import CHOICE_DECAY, MEAN_WINDOW, VAR_EPS, VAR_WINDOW, ClassMeans, Readout
from .rule import LEAKY_SLOPE
from .scaling import TINY_STD, Standardiser

if TYPE_CHECKING:
    from .layer import SpelaLayer

# numba missing, or no cache locator (a read-only install without NUMBA_CACHE_DIR): the torch
# path serves
try:
    from . import kernels
except (ImportError, RuntimeError):
    kernels = None  # type: ignore[assignment]

AVAILABLE = kernels is not None
# A layer holding more weights than this takes torch's matrix-vector product (BLAS's sgemv) for
# its forward inside the compiled step, the rest of its step compiled. The kernels' forward loop
# keeps its sums in a fixed order (no fastmath: the same numbers on every CPU) and does not
# vectorise: one call against torch.addmv's, one thread, least of 7 (/tmp script, 2026-12-03):
# 64x64 4.0 us against 3.8, 128x64 3.9 against 3.5, 128x128 11.8 against 6.1, 512x512 113
# against 27; 64x8 1.7 against 4.5 (torch's dispatch). At or below it, the whole step compiles.
TORCH_PRODUCT = 8192
_LOG_GRID = np.array(LOG_GRID)  # the very floats temperature() adds
# One sample's readout, prediction and temperature fits in two compiled calls, its scores in
# reused buffers (``SpelaMLP._learn_fused``); False: the step before them, sample for sample the
# same numbers (the tests' reference)
FUSED = True


class Buffers:
    """Per-layer scratch vectors (z, y, g and the normalised input), reused across samples, and
    the numpy views of each layer's tensors (fetched again whenever a tensor is replaced)."""

    def __init__(self, layers: list[SpelaLayer]) -> None:
        self.shapes = [(layer.d_in, layer.d_out) for layer in layers]
        self.xin = [np.empty(d_in, dtype=np.float32) for d_in, _ in self.shapes]
        self.z = [np.empty(d_out, dtype=np.float32) for _, d_out in self.shapes]
        self.g = [np.empty(d_out, dtype=np.float32) for _, d_out in self.shapes]
        self.y = [np.empty(d_out, dtype=np.float32) for _, d_out in self.shapes]
        # the layers past TORCH_PRODUCT, with torch views of their z and normalised input
        self.wide = [d_in * d_out > TORCH_PRODUCT for d_in, d_out in self.shapes]
        # (normal tensors even when built under inference mode, as a first predict_one builds
        # them: torch refuses an in-place write to an inference tensor outside it)
        with torch.inference_mode(False):
            self.z_t = [torch.from_numpy(z) for z in self.z]
            self.xin_t = [torch.from_numpy(x) for x in self.xin]
        # the first layer's input of one sample (the fused step's standardised features)
        self.x = np.empty(self.shapes[0][0] if self.shapes else 0, dtype=np.float32)
        n = len(layers)
        self.temps = np.empty(n)  # each stream's temperature, the fused tail's (one per layer)
        self.tops = np.zeros(n, dtype=np.int64)
        self.confs = np.zeros(n)
        self.fitted = np.zeros(n)
        self._scores: tuple[np.ndarray, np.ndarray] = self._score_buffers(0)
        self._keys: list[tuple[object, ...] | None] = [None] * len(layers)
        self._views: list[tuple[np.ndarray, ...]] = [()] * len(layers)
        self._weights = [layer.weight for layer in layers]
        self._lrs: tuple[tuple[float, int, float], list[float]] | None = None

    def _score_buffers(self, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.empty((len(self.shapes), n_classes), dtype=np.float32),
            np.empty(n_classes),
        )

    def scores(self, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
        """Every layer's class-vector scores (L, n_classes) float32 and the class means' scores
        (n_classes,) float64 of one sample, reused while the class count stays (``step``'s
        ``into``, ``readout_learn_one``'s ``out``: read within the sample, never kept)."""
        if self._scores[1].shape[0] != n_classes:
            self._scores = self._score_buffers(n_classes)
        return self._scores

    def fits(self, layers: list[SpelaLayer]) -> bool:
        """Whether these buffers serve ``layers``: the same weight tensors (a grown or loaded
        layer gets new ones; learning updates them in place), else the same shapes."""
        if len(layers) == len(self._weights):
            for layer, w in zip(layers, self._weights, strict=True):
                if layer.weight is not w:
                    break
            else:
                return True
        if self.shapes != [(layer.d_in, layer.d_out) for layer in layers]:
            return False
        self._weights = [layer.weight for layer in layers]
        return True

    def lrs(self, layers: list[SpelaLayer], lr: float, reference: int, boost: float) -> list[float]:
        """``layer_lrs`` of the layers these buffers fit (their widths are the buffers'), kept
        while lr, reference and boost stay the same (the boost is 1 away from a drift)."""
        key = (lr, reference, boost)
        if self._lrs is None or self._lrs[0] != key:
            self._lrs = (key, layer_lrs(layers, lr, reference, boost))
        return self._lrs[1]

    def views(self, i: int, layer: SpelaLayer) -> tuple[np.ndarray, ...]:
        """(weight, bias, vectors, input mean, input m2) of layer i as numpy views of its CPU
        tensors (the mean and m2 of a layer without input statistics are empty)."""
        norm = layer.input_norm
        old = self._keys[i]
        if (
            old is not None
            and old[0] is layer.weight
            and old[1] is layer.bias
            and old[2] is layer.vectors
            and (
                len(old) == 3
                if norm is None
                else len(old) == 5 and old[3] is norm.mean and old[4] is norm.m2
            )
        ):
            return self._views[i]
        key = (layer.weight, layer.bias, layer.vectors) + (
            () if norm is None else (norm.mean, norm.m2)
        )
        empty = np.empty(0)
        stats = (empty, empty) if norm is None else (norm.mean.numpy(), norm.m2.numpy())
        w, b, v = layer.weight.numpy(), layer.bias.numpy(), layer.vectors.numpy()
        self._views[i] = (w, b, v, *stats)
        self._keys[i] = key
        return self._views[i]


def _product(
    layer: SpelaLayer,
    buffers: Buffers,
    i: int,
    h: np.ndarray,
    norm_mode: int,
    denom: float,
    mean: np.ndarray,
    m2: np.ndarray,
) -> None:
    """A wide layer's input normalised (``norm_mode`` as ``kernels.layer_step``'s) and its
    z = W x + b by torch's product into ``buffers.z[i]``, ahead of ``layer_step(product=False)``
    with ``norm_mode`` 0."""
    assert kernels is not None
    if layer.input_norm is None:
        x = torch.from_numpy(h)
    else:
        x = buffers.xin_t[i]
        if norm_mode == 1:
            buffers.xin[i].fill(0.0)
        elif norm_mode == 2:
            kernels.normalise(h, mean, m2, denom, buffers.xin[i])
    torch.addmv(layer.bias, layer.weight, x, out=buffers.z_t[i])


def rehearse_one(
    layers: list[SpelaLayer], buffers: Buffers, x: np.ndarray, k: int, lrs: list[float]
) -> np.ndarray:
    """Learn one stored float32 sample x (d_in,) of class k again on every layer: normalise,
    forward and update, the input statistics left alone (``SpelaMLP._rehearse`` for a replay
    of one); returns the last layer's output from before its update."""
    assert kernels is not None
    no_scores = np.empty(0, dtype=np.float32)
    h = x
    for i, layer in enumerate(layers):
        w, b, v, mean, m2 = buffers.views(i, layer)
        norm = layer.input_norm
        norm_mode, denom, h_in = 0, 1.0, h
        if norm is not None:
            h_in = buffers.xin[i]
            norm_mode = 1 if norm.count == 0 else 2
            if norm.count:
                denom = norm.weight if norm.decay is not None else float(norm.count)
        y = np.empty(w.shape[0], dtype=np.float32)
        wide = buffers.wide[i]
        if wide:
            _product(layer, buffers, i, h, norm_mode, denom, mean, m2)
            norm_mode = 0
        kernels.layer_step(
            w, b, v, k, h, h_in, mean, m2, norm_mode, denom, -1, no_scores,
            buffers.z[i], y, buffers.g[i], lrs[i], LEAKY_SLOPE, 0, 0.0, 0.0, 0.0, 0,
            layer.contrast, layer.n_known, not wide,
        )  # fmt: skip
        h = y
    return h


def step(
    layers: list[SpelaLayer],
    buffers: Buffers,
    x: np.ndarray,
    k: int,
    known: int,
    score: bool,
    lrs: list[float],
    into: np.ndarray | None = None,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Learn one float32 sample x (d_in,) of class k on every layer; returns each layer's scores
    (1, known) before its update (empty when not ``score``) and the last layer's output (d_out,),
    also from before the update. One compiled call per layer (``kernels.layer_step``). With
    ``into`` (L, known), layer i's scores go to into[i] (none returned) and the outputs to the
    buffers' y (the last one valid until the next sample)."""
    assert kernels is not None
    out_scores: list[np.ndarray] = []
    n_classes = known if score else -1
    h = x
    for i, layer in enumerate(layers):
        w, b, v, mean, m2 = buffers.views(i, layer)
        norm = layer.input_norm
        norm_mode, denom, obs_mode, keep, add, beta, count = 0, 1.0, 0, 0.0, 0.0, 0.0, 0
        h_in = h
        if norm is not None:
            h_in = buffers.xin[i]
            if norm.count == 0:
                norm_mode = 1
            else:
                norm_mode = 2
                denom = norm.weight if norm.decay is not None else float(norm.count)
            norm._cache = None
            if norm.decay is not None:  # TensorStandardiser.update's scalars, as _observe
                beta = norm._decay_at(norm.count)
                c0 = norm.weight
                c1 = beta * c0 + (1.0 - beta)
                obs_mode, keep, add = 1, beta * c0 / c1, (1.0 - beta) / c1
                norm.weight = c1
                norm.count += 1
            else:
                norm.count += 1
                obs_mode, count = 2, norm.count
        if into is None:
            y = np.empty(w.shape[0], dtype=np.float32)  # handed on: a fresh array each sample
            s = np.empty((1, max(n_classes, 0)), dtype=np.float32)
            row = s[0]
        else:
            y, row = buffers.y[i], into[i]
        wide = buffers.wide[i]
        if wide:
            _product(layer, buffers, i, h, norm_mode, denom, mean, m2)
            norm_mode = 0
        kernels.layer_step(
            w, b, v, k, h, h_in, mean, m2, norm_mode, denom, n_classes, row,
            buffers.z[i], y, buffers.g[i], lrs[i], LEAKY_SLOPE, obs_mode, keep, add, beta, count,
            layer.contrast, layer.n_known, not wide,
        )  # fmt: skip
        if score and into is None:
            out_scores.append(s)
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
    if buffers.wide[i]:
        x = buffers.xin_t[i] if h_in is buffers.xin[i] else torch.from_numpy(h_in)
        torch.addmv(layer.bias, layer.weight, x, out=buffers.z_t[i])
        kernels.leaky(buffers.z[i], LEAKY_SLOPE, y)
    else:
        kernels.forward(
            layer.weight.numpy(), layer.bias.numpy(), h_in, LEAKY_SLOPE, buffers.z[i], y
        )
    if n_classes < 0:
        return h_in, y, None
    s = np.empty((1, n_classes), dtype=np.float32)
    kernels.cosines(layer.vectors.numpy(), y, n_classes, s[0])
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


def standardise_one(scaler: Standardiser, row: np.ndarray, out: np.ndarray) -> bool:
    """``scaler.transform`` of one float64 row into float32 ``out``, then ``scaler.update``, in
    one compiled call; False (nothing done) when the row misses a feature: the caller's path."""
    assert kernels is not None
    clip = -1.0 if scaler.clip is None else float(scaler.clip)
    done = kernels.standardise_learn(
        row, scaler.mean, scaler.m2, scaler.counts, scaler.count, TINY_STD, clip, out
    )
    if done:
        scaler.count += 1
        scaler._scale = None
    return bool(done)


def standardise_row(scaler: Standardiser, row: np.ndarray, out: np.ndarray) -> None:
    """``scaler.transform`` of one row (d,), a missing feature (NaN) at 0, into float32 ``out``,
    in one compiled call; the statistics stay (a replay's input)."""
    assert kernels is not None
    clip = -1.0 if scaler.clip is None else float(scaler.clip)
    kernels.standardise_row(
        row, scaler.mean, scaler.m2, scaler.counts, scaler.count, TINY_STD, clip, out
    )


def readout_scores(means: ClassMeans, h: np.ndarray, n_classes: int) -> np.ndarray:
    """``means.scores`` for one output h (d,): (1, n_classes) float64."""
    assert kernels is not None
    out = np.empty((1, n_classes))
    kernels.readout_scores(
        means.means, means.counts, means.var, means.n, h, n_classes, VAR_EPS, out[0]
    )
    return out


def calibration_update(fit: OnlineTemperature, scores: np.ndarray, k: int) -> None:
    """``fit.update(scores[None, :], [k])`` for one sample's scores (C,), in one compiled call
    (its sums in order: float64 rounding of numpy's)."""
    assert kernels is not None
    kernels.calibration_update(scores, k, GRID, fit.nll, fit.decay)
    fit.n += 1
    fitted = kernels.fitted_temperature(fit.nll, GRID, _LOG_GRID, LOG_STEP)
    fit.fitted = (fit.n, fitted) if fitted > 0 else None


def softmax_top(scores: np.ndarray, temperature: float) -> tuple[int, float]:
    """The top class of softmax(scores / temperature) for one sample's scores (C,) and its
    probability (``SpelaMLP._softmax`` then argmax, float64 rounding of numpy's)."""
    assert kernels is not None
    top, conf = kernels.softmax_top(scores, float(temperature))
    return int(top), float(conf)


def readout_rehearse(readout: Readout, h: np.ndarray, k: int) -> None:
    """``readout.rehearse(0, h[None, :], [k])`` for one output h (d,)."""
    assert kernels is not None
    cm = readout.layers[0]
    if k >= len(cm.counts):
        cm.grow(k + 1)
    cm.n = int(
        kernels.readout_update(cm.means, cm.counts, cm.var, cm.n, h, k, MEAN_WINDOW, VAR_WINDOW)
    )


def readout_learn(readout: Readout, vec: np.ndarray | None, h: np.ndarray, k: int) -> np.ndarray:
    """``readout.learn(0, vec, h[None, :], [k])`` for one output h (d,): the reported scores
    (1, C) before learning (the class vectors' ``vec`` or the class means' scores, whichever
    hits more), the hit rates and the class means updated."""
    assert kernels is not None
    cm = readout.layers[0]
    out = vec
    if vec is not None:
        means = readout_scores(cm, h, vec.shape[1])
        out = readout._chosen(0, vec, means)  # before this sample's hits count
        if k < vec.shape[1]:
            hits = readout.hits
            for j, s in enumerate((vec, means)):
                hit = 1.0 if int(s[0].argmax()) == k else 0.0
                hits[0, j] = CHOICE_DECAY * hits[0, j] + (1 - CHOICE_DECAY) * hit
    if k >= len(cm.counts):
        cm.grow(k + 1)
    cm.n = int(
        kernels.readout_update(cm.means, cm.counts, cm.var, cm.n, h, k, MEAN_WINDOW, VAR_WINDOW)
    )
    return out if out is not None else np.zeros((1, 0))


def readout_learn_one(
    readout: Readout, vec: np.ndarray | None, h: np.ndarray, k: int, out: np.ndarray
) -> bool:
    """``readout_learn`` in one compiled call: vec (C,) the last layer's class-vector scores
    (None: nothing known yet, the means only learn), the class means' scores into out (C,);
    True when those, not vec, are reported."""
    assert kernels is not None
    cm = readout.layers[0]
    if k >= len(cm.counts):
        cm.grow(k + 1)
    n_classes = -1 if vec is None else vec.shape[0]
    n, use_means = kernels.readout_learn(
        out if vec is None else vec, cm.means, cm.counts, cm.var, cm.n, h, k, n_classes,
        readout.hits[0], CHOICE_DECAY, VAR_EPS, MEAN_WINDOW, VAR_WINDOW, out,
    )  # fmt: skip
    cm.n = int(n)
    return bool(use_means)


def choose_calibrate(
    fits: list[OnlineTemperature],
    buffers: Buffers,
    s: np.ndarray,
    last: np.ndarray,
    use_last: bool,
    k: int,
    choose: bool,
    calibrate: bool,
) -> int:
    """One sample's per-stream top class and probability (into ``buffers.tops``, ``.confs``, at
    the temperatures in ``buffers.temps``) and temperature fits (``calibration_update``), in one
    compiled call: stream i scores s[i] (L, C), the last one ``last`` where ``use_last``.
    Returns numpy's argmax of the last stream's scores."""
    assert kernels is not None
    nlls = tuple([fit.nll for fit in fits])  # a list first: no generator per sample
    top = kernels.choose_calibrate(
        s, last, use_last, k, buffers.temps, choose, calibrate, GRID, nlls, fits[0].decay,
        _LOG_GRID, LOG_STEP, buffers.tops, buffers.confs, buffers.fitted,
    )  # fmt: skip
    if calibrate:
        for fit, fitted in zip(fits, buffers.fitted.tolist(), strict=True):
            n = fit.n = fit.n + 1
            fit.fitted = (n, fitted) if fitted > 0 else None
    return int(top)
