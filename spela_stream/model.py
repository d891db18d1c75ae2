"""SpelaMLP: a stack of SPELA layers behind a running standardiser, with River's vocabulary.

Each layer learns from its own local loss right after its forward step and hands the next layer
its output as a plain tensor, so one forward pass per sample is the whole of learning, and every
layer makes a prediction.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> model = SpelaMLP(hidden=(32,), seed=0)
>>> for _ in range(300):
...     x = rng.normal(size=4)
...     model.learn_one(x, "pos" if x[0] + x[1] > 0 else "neg")
>>> model.predict_one(np.array([2.0, 2.0, 0.0, 0.0]))
'pos'
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

import numpy as np
import torch
from river import base

from .calibration import OnlineTemperature
from .errors import ConfigError, ModelError, WidthError
from .inputs import Label, as_matrix, as_vector, check_label, check_label_kinds, dict_rows
from .layer import SpelaLayer
from .memory import ReplayMemory
from .policy import REPORTS
from .scaling import Standardiser

Report = Literal["last", "confident", "early_exit", "vote"]
STATE_FORMAT = "spela-stream.model/1"
# lr is the step of a layer of this width; a layer of width d steps lr * sqrt(d / 1024), because
# dL/dy shrinks as 1 / |y| and |y| grows as sqrt(d) (measured: with one fixed lr, narrow layers
# overshoot and wide ones crawl).
REFERENCE_WIDTH = 1024
REPLAY_WEIGHT = 1.0
REPLAY_OBSERVE = False
_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_F = TypeVar("_F", bound=Callable[..., Any])


def _on_threads(method: _F) -> _F:
    """Run a per-sample method on ``self.threads`` torch threads, restoring the caller's count.

    torch's thread count is process-global: a per-sample step is a few small matrix-vector
    products, memory bound, and torch's default (one thread per core) makes it several times
    slower (issue 13: 59 against 526 samples/s). Setting and restoring costs well under a
    microsecond, so the caller's own ``torch.set_num_threads`` holds everywhere else.
    """

    @functools.wraps(method)
    def wrapper(self: SpelaMLP, *args: Any, **kwargs: Any) -> Any:
        n = self.threads
        outer = torch.get_num_threads()
        if n is None or n == outer:
            return method(self, *args, **kwargs)
        torch.set_num_threads(n)
        try:
            return method(self, *args, **kwargs)
        finally:
            torch.set_num_threads(outer)

    return cast(_F, wrapper)


@dataclass(frozen=True)
class Prediction:
    """What the model predicted for one sample, and where.

    ``label`` is None before any class is known. ``layer`` is the index of the layer whose
    prediction is reported (-1 for a vote over layers); ``layer_labels`` holds every computed
    layer's own prediction (fewer than the depth when early exit stopped the pass).
    """

    label: Label | None
    confidence: float
    layer: int
    layer_labels: tuple[Label | None, ...]
    layer_confidences: tuple[float, ...]


class SpelaMLP(base.Classifier):
    """A SPELA network that learns one sample (or a micro-batch) at a time.

    Parameters
    ----------
    hidden
        Widths of the SPELA layers; every layer predicts, the last one by default.
    lr
        SGD step size of the local updates, one sample at a time, for a layer of 1024 units; a layer
        of width d uses ``lr * sqrt(d / 1024)``.
    capacity
        Class vectors each layer spreads up front (more classes grow the set). 16 keeps a binary
        stream's two vectors from being antipodal.
    report
        Which prediction is reported: ``last`` layer, most ``confident`` layer, ``early_exit`` at
        the first layer whose confidence reaches ``exit_threshold``, or a ``vote`` summing every
        layer's scores.
    temperature
        Probabilities are ``softmax(cos / temperature)`` over the known classes.
    calibrate
        Fit each layer's temperature (and the vote's) online on its own prequential predictions
        (``calibration.OnlineTemperature``), so that reported confidences and probabilities are
        calibrated; ``temperature`` holds until 20 predictions have been scored. A layer's label
        is its top cosine whatever the temperature, so ``last`` reports the same labels either
        way; ``confident``, ``early_exit`` and ``exit_threshold`` read the calibrated confidences,
        comparable across layers (a threshold of 0.9 asks for about 90% right).
    standardise, clip
        Standardise features with running statistics, clipping to [-clip, clip].
    normalise_hidden, hidden_decay
        Standardise every later layer's input (the previous layer's output) per unit with running
        statistics, so that one step size suits every layer and stream. With ``hidden_decay`` the
        statistics are moving averages that forget (0.98: about the last 50 samples), which lets
        the network follow a drifting stream; ``None`` keeps equal-weight statistics.
    memory
        Raw samples kept in a class-balanced replay memory (0 turns it off). Old classes are
        rehearsed from it, so a class learned early is not forgotten when later ones arrive.
    replay, replay_every
        After every ``replay_every`` learned samples, stored samples are learned again in one
        micro-batch: of the classes the recent stream has stopped showing (each class's
        long-run share minus its share of about the last 100 samples), ``replay`` per learned
        sample when the recent stream shows one class of several, none when every class keeps
        coming. A replay changes the layers only: not the input statistics, not ``n_learned``.
    device, dtype
        Torch device ("cpu", "cuda", ...) and "float32" or "float64".
    threads
        Torch CPU threads for the per-sample methods (``learn_one``, ``predict_learn_one``,
        ``predict_one``, ``predict_proba_one``, ...): set for the call and restored after it, so
        a per-sample learner is fast without the caller knowing that one thread suits it, and
        the caller's own ``torch.set_num_threads`` holds outside these calls. ``None`` leaves
        torch's setting alone. The ``_many`` methods always use the caller's setting (a batch
        can use cores). torch's count is process-global: a model called from several Python
        threads at once should be given ``threads=None`` and the count set once, up front. Not
        part of the saved state: a runtime choice, like ``device`` at load time.
    """

    def __init__(
        self,
        hidden: Sequence[int] = (1024, 1024),
        lr: float = 10.0,
        capacity: int = 16,
        report: Report = "last",
        exit_threshold: float = 0.9,
        temperature: float = 0.1,
        calibrate: bool = True,
        standardise: bool = True,
        clip: float | None = 5.0,
        normalise_hidden: bool = True,
        hidden_decay: float | None = 0.98,
        seed: int = 0,
        memory: int = 1000,
        replay: float = 1.0,
        replay_every: int = 10,
        device: str = "cpu",
        dtype: str = "float32",
        threads: int | None = 1,
    ) -> None:
        self.hidden = tuple(int(h) for h in hidden)
        self.lr = float(lr)
        self.capacity = int(capacity)
        self.report = report
        self.exit_threshold = float(exit_threshold)
        self.temperature = float(temperature)
        self.calibrate = bool(calibrate)
        self.standardise = bool(standardise)
        self.clip = clip
        self.normalise_hidden = bool(normalise_hidden)
        self.hidden_decay = None if hidden_decay is None else float(hidden_decay)
        self.seed = int(seed)
        self.memory = int(memory)
        self.replay = float(replay)
        self.replay_every = int(replay_every)
        self.device = str(device)
        self.dtype = str(dtype)
        self.threads = None if threads is None else int(threads)
        self._validate_config()
        self._torch_device = torch.device(self.device)
        self._torch_dtype = _DTYPES[self.dtype]
        self.labels: list[Label] = []
        self._index: dict[Label, int] = {}
        self.feature_names: list[Hashable] | None = None
        self._columns: dict[Hashable, int] = {}  # feature name -> column, rebuilt as names grow
        self.n_features: int | None = None
        self.n_learned = 0
        self.scaler: Standardiser | None = None
        self.layers: list[SpelaLayer] = []
        self.replay_memory: ReplayMemory | None = None
        self.calibration = [OnlineTemperature() for _ in range(self._n_streams)]

    def _validate_config(self) -> None:
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ConfigError(f"hidden must be one or more positive widths, got {self.hidden}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number, got {self.lr}")
        if self.hidden_decay is not None and not 0.0 < self.hidden_decay < 1.0:
            raise ConfigError(f"hidden_decay must be in (0, 1) or None, got {self.hidden_decay}")
        if self.memory < 0:
            raise ConfigError(
                f"memory must be >= 0 stored samples (0 turns it off), got {self.memory}"
            )
        if not (self.replay >= 0 and math.isfinite(self.replay)):
            raise ConfigError(f"replay must be a number >= 0, got {self.replay}")
        if self.replay_every < 1:
            raise ConfigError(f"replay_every must be >= 1, got {self.replay_every}")
        if self.capacity < 1:
            raise ConfigError(f"capacity must be >= 1, got {self.capacity}")
        if self.report not in REPORTS:
            raise ConfigError(f"report must be one of {', '.join(REPORTS)}, got {self.report!r}")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(
                f"threads must be >= 1 or None (torch's own setting), got {self.threads}"
            )
        if self.dtype not in _DTYPES:
            raise ConfigError(f"dtype must be float32 or float64, got {self.dtype!r}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device {self.device!r} asked for, but torch sees no CUDA device")

    @property
    def _n_streams(self) -> int:
        """Prediction streams with a temperature of their own: every layer, and the vote."""
        return len(self.hidden) + (self.report == "vote")

    def _temperatures(self) -> list[float]:
        """Each stream's temperature: fitted on the stream, or the model's own."""
        if not self.calibrate:
            return [self.temperature] * self._n_streams
        return [c.temperature(self.temperature) for c in self.calibration]

    def _fit_calibration(self, layer_scores: list[np.ndarray], k: np.ndarray) -> None:
        """Fold a batch's prequential scores (B, C) per layer into the temperatures; a sample of
        a class new in this batch had no prediction and is left out."""
        old = k < layer_scores[0].shape[1]
        if not old.any():
            return
        streams = [s[old] for s in layer_scores]
        if self.report == "vote":
            streams.append(np.mean(streams, axis=0))
        for fit, scores in zip(self.calibration, streams, strict=True):
            fit.update(scores, k[old])

    @property
    def _multiclass(self) -> bool:
        return True

    # ------------------------------------------------------------------ input handling

    def _build(self, n_features: int) -> None:
        self.n_features = n_features
        self.scaler = Standardiser(n_features, clip=self.clip)
        widths = (n_features, *self.hidden)
        self.layers = [
            SpelaLayer(
                widths[i],
                widths[i + 1],
                capacity=self.capacity,
                seed=self.seed * 1_000_003 + i,
                device=self._torch_device,
                dtype=self._torch_dtype,
                normalise_input=self.normalise_hidden and i > 0,
                input_decay=self.hidden_decay,
            )
            for i in range(len(self.hidden))
        ]
        if self.memory > 0:
            self.replay_memory = ReplayMemory(self.memory, n_features, seed=self._memory_seed)

    @property
    def _memory_seed(self) -> int:
        return self.seed * 1_000_003 + 999_983

    @property
    def _by_name(self) -> bool:
        """Dicts are read by feature name (unless the model was built from vectors)."""
        return self.feature_names is not None or self.n_features is None

    def _rows(self, xs: list[object]) -> tuple[np.ndarray, list[Hashable]]:
        """Samples as a float64 (B, d + n) array and the n feature names new to the model.

        Dict samples are read by name: the columns are the known names, then the new ones; a
        feature a dict lacks is NaN, imputed at its running mean (``_scaled``). Vectors keep
        their fixed width, checked.
        """
        if xs and self._by_name and all(isinstance(r, Mapping) for r in xs):
            names = self.feature_names or []
            if len(self._columns) != len(names):
                self._columns = {k: i for i, k in enumerate(names)}
            return dict_rows(xs, self._columns)  # type: ignore[arg-type]
        if len(xs) == 1:
            return as_vector(xs[0], self.feature_names, self.n_features)[None, :], []
        return as_matrix(xs, self.feature_names, self.n_features), []

    def _known(self, xs: list[object]) -> np.ndarray:
        """Samples to predict: features the model has never learned are left out."""
        batch, new = self._rows(xs)
        out: np.ndarray = batch[:, : batch.shape[1] - len(new)]
        return out

    def _vector(self, x: object) -> np.ndarray:
        out: np.ndarray = self._known([x])[0]
        return out

    def _commit_input(self, width: int, new: list[Hashable]) -> None:
        """Build the layers at the first learned sample (a dict's names fixed in name order);
        grow the input for features that appear later."""
        if self.n_features is None:
            self.feature_names = new or None
            self._build(width)
        elif new:
            self._grow(new)

    def _grow(self, names: list[Hashable]) -> None:
        """New dict features: new first-layer columns (nothing else moves), fresh statistics, and
        the memory's stored inputs padded as missing. A vector input never grows."""
        assert self.feature_names is not None and self.scaler is not None
        assert self.n_features is not None
        k = len(names)
        self.layers[0].grow_inputs(k, seed=self.seed * 1_000_003 + 499_979 + self.n_features)
        self.scaler.grow(k)
        if self.replay_memory is not None:
            self.replay_memory.grow(k)
        self.feature_names = [*self.feature_names, *names]
        self.n_features += k

    def _to_tensor(self, batch: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(batch, dtype=self._torch_dtype).to(self._torch_device)

    # ------------------------------------------------------------------ forward passes

    def _scaled(self, batch: np.ndarray) -> np.ndarray:
        assert self.scaler is not None
        if self.standardise:
            return self.scaler.transform(batch)  # a missing feature (NaN) at its mean: 0
        return np.nan_to_num(batch, nan=0.0) if np.isnan(batch).any() else batch

    def _forward_scores(self, h: torch.Tensor, stop_early: bool) -> list[np.ndarray]:
        """Scores (B, C) of every computed layer; with ``stop_early``, stop at a confident one."""
        n_classes = len(self.labels)
        temps = self._temperatures() if stop_early else []
        out = []
        for i, layer in enumerate(self.layers):
            _, h = layer.forward(layer.normalise(h))
            s = layer.scores(h, n_classes)
            out.append(s)
            if stop_early and i + 1 < len(self.layers):
                conf = self._softmax(s, temps[i]).max(axis=1)  # (B,) calibrated
                if bool((conf >= self.exit_threshold).all()):
                    break
        return out

    def _no_prediction(self) -> Prediction:
        """What is predicted before any class is known."""
        return Prediction(None, 0.0, len(self.hidden) - 1, (), ())

    def _softmax(self, scores: np.ndarray, temperature: float | None = None) -> np.ndarray:
        """softmax(cos / temperature) over the last axis."""
        z = np.asarray(scores, dtype=np.float64) / (temperature or self.temperature)
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        out: np.ndarray = e / e.sum(axis=-1, keepdims=True)
        return out

    def _choose(self, layer_scores: list[np.ndarray]) -> list[Prediction]:
        """Apply the report policy to per-layer scores (B, C) of a batch, with each stream's
        temperature (calibrated, unless ``calibrate`` is off)."""
        temps = self._temperatures()  # one per layer, then the vote's
        probs = [self._softmax(s, t) for s, t in zip(layer_scores, temps, strict=False)]
        preds = []
        for row in range(probs[0].shape[0]):
            tops = [int(p[row].argmax()) for p in probs]
            confs = tuple(float(p[row, t]) for p, t in zip(probs, tops, strict=True))
            labels = tuple(self.labels[t] for t in tops)
            if self.report == "vote":
                summed = np.sum([s[row] for s in layer_scores], axis=0)
                p = self._softmax(summed, temps[-1] * len(layer_scores))
                top = int(p.argmax())
                preds.append(Prediction(self.labels[top], float(p[top]), -1, labels, confs))
                continue
            if self.report == "confident":
                chosen = int(np.argmax(confs))
            elif self.report == "early_exit":  # the first confident layer; later ones unused
                confident = [i for i, c in enumerate(confs) if c >= self.exit_threshold]
                chosen = confident[0] if confident else len(probs) - 1
                labels, confs = labels[: chosen + 1], confs[: chosen + 1]
            else:
                chosen = len(probs) - 1
            preds.append(Prediction(labels[chosen], confs[chosen], chosen, labels, confs))
        return preds

    def _predict_matrix(self, batch: np.ndarray) -> list[Prediction]:
        if not self.labels or self.n_features is None:
            return [self._no_prediction()] * batch.shape[0]
        with torch.inference_mode():
            h = self._to_tensor(self._scaled(batch))
            scores = self._forward_scores(h, stop_early=self.report == "early_exit")
            return self._choose(scores)

    def _learn_matrix(
        self, batch: np.ndarray, ys: Sequence[Label], predict: bool
    ) -> list[Prediction] | None:
        """Predict (optionally) and learn a batch in one forward pass."""
        assert self.scaler is not None
        known = len(self.labels)  # predictions may only use classes known before this batch
        check_label_kinds(ys, self.labels)  # all of ys: True == 1 would merge in a dict
        for y in dict.fromkeys(ys):
            if y not in self._index:
                self._index[y] = len(self.labels)
                self.labels.append(y)
        for layer in self.layers:
            layer.ensure_classes(len(self.labels))
        predict_now = predict and known > 0
        score_now = known > 0 and (predict or self.calibrate)  # learning is the same either way
        scores = []
        with torch.inference_mode():
            k = torch.tensor([self._index[y] for y in ys], device=self._torch_device)  # (B,)
            h = self._to_tensor(self._scaled(batch))
            if self.standardise:
                self.scaler.update(batch)
            for layer in self.layers:
                h_in = layer.normalise(h)
                z, out = layer.forward(h_in)
                if score_now:
                    scores.append(layer.scores(out, known))
                layer.update(h_in, z, out, k, self.lr * math.sqrt(layer.d_out / REFERENCE_WIDTH))
                layer.observe(h)
                h = out  # the next layer receives y, computed before this layer's update
        self.n_learned += batch.shape[0]
        preds = self._choose(scores) if predict_now else None  # before this batch's calibration
        if score_now and self.calibrate:
            self._fit_calibration(scores, k.cpu().numpy())
        if self.replay_memory is not None:
            self._remember(batch, k.tolist())
        if not predict:
            return None
        return preds or [self._no_prediction()] * batch.shape[0]

    def _remember(self, batch: np.ndarray, ks: list[int]) -> None:
        """Offer the learned samples to the memory; rehearse stored ones when a replay is due."""
        mem = self.replay_memory
        assert mem is not None
        for row, k in zip(batch, ks, strict=True):
            mem.add(row, k)
        mem.pending += len(ks)
        if mem.pending < self.replay_every:
            return
        # Rehearse what the stream has stopped showing: the classes' shortfall (long-run share
        # minus recent share) sets both how many replays and which classes. Scaled so that a
        # recent stream of one class among C replays ``replay`` per sample (at most twice that);
        # an i.i.d. stream, where every class keeps coming, is barely replayed.
        shortfall = mem.shortfall()
        n_classes = len(shortfall)
        share = float(shortfall.sum()) / (1.0 - 1.0 / n_classes) if n_classes > 1 else 0.0
        n = int(round(self.replay * mem.pending * share))
        mem.pending = 0
        if n > 0:
            raw, classes = mem.sample(n, shortfall)
            if len(classes):
                self._rehearse(raw, classes)

    def _rehearse(self, raw: np.ndarray, ks: np.ndarray) -> None:
        """Learn stored samples again: the layers update; input statistics and counts do not."""
        with torch.inference_mode():
            k = torch.as_tensor(ks, device=self._torch_device)  # (B,)
            h = self._to_tensor(self._scaled(raw))
            for layer in self.layers:
                h_in = layer.normalise(h)
                z, out = layer.forward(h_in)
                # summed, not averaged, over the batch: each replay steps as a new sample does
                lr = self.lr * math.sqrt(layer.d_out / REFERENCE_WIDTH) * len(ks) * REPLAY_WEIGHT
                layer.update(h_in, z, out, k, lr)
                if REPLAY_OBSERVE:
                    layer.observe(h)
                h = out

    # ------------------------------------------------------------------ River API

    @_on_threads
    def learn_one(self, x: object, y: object, **kwargs: Any) -> None:
        """Learn one labelled sample: standardise, then each layer forwards and updates."""
        self.predict_learn_one(x, y, predict=False)

    @_on_threads
    def predict_learn_one(self, x: object, y: object, predict: bool = True) -> Prediction | None:
        """Predict ``x`` as ``predict_one`` would, then learn ``(x, y)``, in one forward pass.

        This is test-then-train for the price of one pass: each layer's prediction uses its
        output before its own update, which is exactly what ``predict_one`` would have seen.
        """
        label = check_label(y)
        batch, new = self._rows([x])
        check_label_kinds([label], self.labels)  # before the input grows
        self._commit_input(batch.shape[1], new)
        preds = self._learn_matrix(batch, [label], predict)
        return preds[0] if preds else None

    @_on_threads
    def predict_one(self, x: object, **kwargs: Any) -> Label | None:
        """The reported label for ``x`` (None before any class has been learned)."""
        return self._predict_matrix(self._vector(x)[None, :])[0].label

    @_on_threads
    def predict_proba_one(self, x: object, **kwargs: Any) -> dict[Label, float]:
        """Probabilities over known labels, softmax(cos / temperature) at the reported layer."""
        vec = self._vector(x)
        if not self.labels or self.n_features is None:
            return {}
        with torch.inference_mode():
            h = self._to_tensor(self._scaled(vec[None, :]))
            scores = self._forward_scores(h, stop_early=self.report == "early_exit")
            chosen = self._choose(scores)[0].layer  # the report policy lives in _choose alone
            s = np.mean(scores, axis=0) if chosen == -1 else scores[chosen]
            p = self._softmax(s[0], self._temperatures()[chosen]).tolist()
        return dict(zip(self.labels, p, strict=True))

    @_on_threads
    def predict_layers_one(self, x: object) -> Prediction:
        """Every layer's prediction for ``x`` (the full pass, whatever the report policy)."""
        vec = self._vector(x)
        if not self.labels or self.n_features is None:
            return self._no_prediction()
        with torch.inference_mode():
            h = self._to_tensor(self._scaled(vec[None, :]))
            scores = self._forward_scores(h, stop_early=False)
            return self._choose(scores)[0]

    @_on_threads
    def predict_explain_one(self, x: object) -> Prediction:
        """The reported prediction for ``x`` with its confidence and the layer it came from."""
        return self._predict_matrix(self._vector(x)[None, :])[0]

    def learn_many(self, X: object, y: Iterable[object]) -> None:
        """Learn a micro-batch in one step per layer (the gradient is averaged over the batch)."""
        self.predict_learn_many(X, y, predict=False)

    def predict_learn_many(
        self, X: object, y: Iterable[object], predict: bool = True
    ) -> list[Prediction] | None:
        """Predict a micro-batch as ``predict_many`` would, then learn it, in one pass."""
        labels = [check_label(v) for v in y]
        if hasattr(X, "to_dict") and hasattr(X, "columns"):  # a pandas DataFrame
            X = X.to_dict(orient="records")
        if isinstance(X, Iterable) and not isinstance(X, np.ndarray | torch.Tensor):
            X = list(X)
        batch, new = self._rows(X) if isinstance(X, list) else (self._matrix(X), [])
        if batch.shape[0] != len(labels):
            raise WidthError(f"batch has {batch.shape[0]} samples but {len(labels)} labels")
        if batch.shape[0] == 0:
            return [] if predict else None
        check_label_kinds(labels, self.labels)  # before the input grows
        self._commit_input(batch.shape[1], new)
        return self._learn_matrix(batch, labels, predict)

    def _matrix(self, xs: object) -> np.ndarray:
        return as_matrix(xs, self.feature_names, self.n_features)

    def predict_many(self, X: object) -> list[Label | None]:
        """Reported labels for a micro-batch."""
        if hasattr(X, "to_dict") and hasattr(X, "columns"):  # a pandas DataFrame
            X = X.to_dict(orient="records")
        if isinstance(X, Iterable) and not isinstance(X, np.ndarray | torch.Tensor):
            X = list(X)
        batch = self._known(X) if isinstance(X, list) and X else self._matrix(X)
        if batch.shape[0] == 0:
            return []
        return [p.label for p in self._predict_matrix(batch)]

    # ------------------------------------------------------------------ state

    def config(self) -> dict[str, Any]:
        """Hyper-parameters as JSON-able values."""
        return {
            "hidden": list(self.hidden),
            "lr": self.lr,
            "capacity": self.capacity,
            "report": self.report,
            "exit_threshold": self.exit_threshold,
            "temperature": self.temperature,
            "calibrate": self.calibrate,
            "standardise": self.standardise,
            "clip": self.clip,
            "normalise_hidden": self.normalise_hidden,
            "hidden_decay": self.hidden_decay,
            "seed": self.seed,
            "memory": self.memory,
            "replay": self.replay,
            "replay_every": self.replay_every,
            "device": self.device,
            "dtype": self.dtype,
        }

    def nbytes(self) -> int:
        """Bytes of learned state: weights, biases, class vectors and running statistics."""
        total = 0
        if self.scaler is not None:
            total += self.scaler.mean.nbytes + self.scaler.m2.nbytes
        for layer in self.layers:
            tensors = [layer.weight, layer.bias, layer.vectors]
            if layer.input_norm is not None:
                tensors += [layer.input_norm.mean, layer.input_norm.m2]
            total += sum(t.element_size() * t.nelement() for t in tensors)
        if self.replay_memory is not None:
            total += self.replay_memory.nbytes()
        return total

    def state_dict(self) -> dict[str, Any]:
        """All state as a flat dict of numpy arrays and JSON-able values (no pickling needed)."""
        state: dict[str, Any] = {
            "format": STATE_FORMAT,
            "config": self.config(),
            "labels": list(self.labels),
            "feature_names": None if self.feature_names is None else list(self.feature_names),
            "n_features": self.n_features,
            "n_learned": self.n_learned,
        }
        if self.scaler is not None:
            for key, arr in self.scaler.state().items():
                state[f"scaler.{key}"] = arr
        for i, layer in enumerate(self.layers):
            for key, arr in layer.state().items():
                state[f"layers.{i}.{key}"] = arr
        if self.replay_memory is not None:
            for key, arr in self.replay_memory.state().items():
                state[f"memory.{key}"] = arr
        for i, fit in enumerate(self.calibration):
            for key, arr in fit.state().items():
                state[f"calibration.{i}.{key}"] = arr
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, Any], **overrides: Any) -> SpelaMLP:
        """Rebuild a model from ``state_dict()``; ``overrides`` may change e.g. ``device``."""
        if state.get("format") != STATE_FORMAT:
            raise ModelError(
                f"not a spela-stream model state (format {state.get('format')!r}, "
                f"expected {STATE_FORMAT!r})"
            )
        try:
            config = {**state["config"], **overrides}
            model = cls(**config)
            model.labels = [check_label(v) for v in state["labels"]]
            model._index = {v: i for i, v in enumerate(model.labels)}
            if len(model._index) != len(model.labels):  # 1 and True count as one label too
                raise ModelError(f"the state's labels {model.labels[:10]} hold one twice")
            names = state["feature_names"]
            model.feature_names = None if names is None else list(names)
            model.n_learned = int(state["n_learned"])
            n_features = state["n_features"]
            if n_features is not None:
                model.n_features = int(n_features)
                model.scaler = Standardiser(model.n_features, clip=model.clip)
                keys = ("count", "mean", "m2", *(["counts"] if "scaler.counts" in state else []))
                model.scaler.load({k: state[f"scaler.{k}"] for k in keys})
                model.layers = [
                    SpelaLayer.from_state(
                        {
                            k.removeprefix(f"layers.{i}."): v
                            for k, v in state.items()
                            if k.startswith(f"layers.{i}.")
                        },
                        seed=model.seed * 1_000_003 + i,
                        device=model._torch_device,
                        dtype=model._torch_dtype,
                        input_decay=model.hidden_decay,
                    )
                    for i in range(len(model.hidden))
                ]
                if model.memory > 0:
                    saved = {
                        k.removeprefix("memory."): v
                        for k, v in state.items()
                        if k.startswith("memory.")
                    }
                    model.replay_memory = (
                        ReplayMemory.from_state(saved, model.memory)
                        if saved
                        else ReplayMemory(model.memory, model.n_features, seed=model._memory_seed)
                    )
            model.calibration = [  # a stream saved without one (older states) starts its fit
                OnlineTemperature.from_state(
                    {k: state[f"calibration.{i}.{k}"] for k in ("nll", "n")}
                )
                if f"calibration.{i}.nll" in state
                else OnlineTemperature()
                for i in range(model._n_streams)
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"model state is incomplete or corrupt: {exc!r}") from None
        return model

    def __repr__(self) -> str:
        return f"SpelaMLP({json.dumps(self.config())[1:-1]}, n_learned={self.n_learned})"
