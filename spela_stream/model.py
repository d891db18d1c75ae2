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

from . import compiled as compiled_step
from . import drift as drift_rules
from . import input_readout as input_rules
from .calibration import OnlineTemperature
from .drift import DriftDetector
from .errors import ConfigError, ModelError, WidthError
from .expansion import FOURIER_MAX_FEATURES, FourierFeatures
from .input_readout import InputReadout
from .inputs import Label, as_matrix, as_vector, check_label, check_label_kinds, dict_rows
from .layer import SpelaLayer
from .memory import ReplayMemory
from .policy import REPORTS
from .readout import Readout
from .scaling import Standardiser

Report = Literal["last", "confident", "early_exit", "vote"]
STATE_FORMAT = "spela-stream.model/1"
# lr is the step of a layer of this width; a layer of width d steps lr * sqrt(d / 1024), because
# dL/dy shrinks as 1 / |y| and |y| grows as sqrt(d) (measured: with one fixed lr, narrow layers
# overshoot and wide ones crawl).
REFERENCE_WIDTH = 1024
REPLAY_WEIGHT = 1.0
REPLAY_OBSERVE = False
# When a new class arrives, later layers' input statistics slow from hidden_decay to
# NEW_CLASS_DECAY for the next NEW_CLASS_SPAN samples: the newcomer does not take them over
# while the layers learn it (a stream whose classes are all known keeps the fast window).
NEW_CLASS_DECAY = 0.999
NEW_CLASS_SPAN = 2000
# The contrastive local loss's temperature (``contrast``), the default since issue 11 round 7:
# against the paper's log(2 - cos), RandomRBF drift 0.816 -> 0.915 (backprop 0.903), Agrawal
# 0.842 -> 0.907, recurring Agrawal 0.736 -> 0.807; Elec2 +0.6, MNIST +1.6, Optdigits +1.0,
# Letter +6.4 points, MNIST 5x2 held-out +1.1 (benchmarks/results/continual-research.md).
CONTRAST = 0.1
# ``replay_gate``, the default since issue 11 round 9: rehearse a class only once it has not come
# for REPLAY_GATE times its expected gap (samples seen / samples of the class), not whenever its
# recent share is below its long-run one (0, before): recurring Agrawal 0.807 -> 0.829, Agrawal
# switch 0.907 -> 0.914, SEA abrupt 0.963 -> 0.970, RandomRBF 0.915 -> 0.914, Elec2 the same,
# MNIST 5x2 held-out 0.9285 -> 0.9245, 10x1 0.9195 the same (benchmarks/results/
# continual-research.md, round 9).
REPLAY_GATE = 5.0
AUTO: Literal["auto"] = "auto"
AUTO_DEPTH = 2
# hidden="auto": inputs up to AUTO_SMALL_INPUT features get two layers of AUTO_SMALL_WIDTH, wider
# ones two of REFERENCE_WIDTH (benchmarks/results/width.md: 512 against 1024 on eight streams,
# -0.8 to +2.8 points, 1.3-1.5x less CPU, a quarter of the bytes; MNIST's 784 pixels keep 1024).
AUTO_SMALL_INPUT = 64
AUTO_SMALL_WIDTH = 512
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


def auto_hidden(n_features: int) -> tuple[int, ...]:
    """The shape ``hidden="auto"`` builds for an input of ``n_features``: two layers of 512 for
    up to 64 features, two of 1024 for more."""
    width = AUTO_SMALL_WIDTH if n_features <= AUTO_SMALL_INPUT else REFERENCE_WIDTH
    return (width,) * AUTO_DEPTH


class SpelaMLP(base.Classifier):
    """A SPELA network that learns one sample (or a micro-batch) at a time.

    Parameters
    ----------
    hidden
        Widths of the SPELA layers; every layer predicts, the last one by default. ``"auto"``
        (the default): two layers of 512 for up to 64 input features, of 1024 for more
        (``auto_hidden``; the class count is unknown then), fixed when the first sample
        builds the model; from then on ``hidden``, ``config()`` and the saved state hold the
        widths built, so a saved model loads as that fixed shape.
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
    replay_gate
        Rehearse only the classes that have gone: not seen for more than ``replay_gate`` times
        their expected gap (samples seen / samples of the class). A class whose share merely
        fell, as when a concept change moves the class shares, is not rehearsed: its stored
        samples were labelled under the old concept. 0 rehearses every class below its
        long-run share. The default, 5 (``REPLAY_GATE``), issue 11 round 9
        (benchmarks/results/continual-research.md); a state saved before the option loads as 0.
    readout
        The last layer also keeps running class means of its output (``readout.ClassMeans``)
        and reports them instead of its class vectors while they predict better on the stream
        (a new class is predicted from its first samples); ``False``: class vectors only.
    input_readout
        A window in samples (0, the default, turns it off): a whitened class-mean readout of
        the raw input whose statistics forget over about that many samples and are shortened
        on a detected drift (``input_readout.InputReadout``), mixed into the last layer's
        scores (``input_readout.MIX``). Research of issue 11, round 6: see
        benchmarks/results/continual-research.md for what it measured.
    fourier
        Random Fourier features of the standardised input added in front of it for the first
        layer, when the input has at most 32 features (``expansion.FourierFeatures``; 0, the
        default, turns it off). 512 fits RandomRBF about as well as backprop does (0.897 against
        0.818) but costs Elec2 4.6 points and Agrawal 1.5, so it is an option, not a default.
    contrast
        A temperature T > 0: each layer's local loss is ``T * CE(softmax(cos(y, v_j) / T), k)``
        over the known classes' vectors, which also pushes the output away from the other
        classes' vectors and stops pulling once a sample is right by a margin
        (``rule.contrastive_grad``); 0: the paper's ``log(2 - cos(y, v_k))``. The default, 0.1
        (``CONTRAST``), fits non-linear streams far better and lifts every i.i.d. stream (issue
        11, round 7, benchmarks/results/continual-research.md); a state saved before the option
        loads as 0, the loss it learned with.
    adapt
        Watch the reported layer's prequential error for a rise (Page-Hinkley,
        ``drift.DriftDetector``) and, on a detected change, raise the step size for a while and
        shorten the input standardiser's memory, so the model re-learns a changed concept faster.
    forget_on_drift
        On a detected drift (``adapt``) also empty the replay memory: its samples were labelled
        under the old concept and rehearsing them after a change pulls the model back to it. The
        class shares it tracks are kept, and it refills from the stream at once. Research of
        issue 11, round 8 (benchmarks/results/continual-research.md); a state saved before the
        option loads as ``False``.
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
    compiled
        Learn one sample at a time through the fused numba step (``compiled``: the same
        arithmetic, within float32 rounding, at a fraction of torch's per-sample overhead).
        ``None`` (the default): on a CPU float32 model whenever numba imports, else torch's
        path (a layer of more than ``compiled.TORCH_PRODUCT`` weights takes torch's
        matrix-vector product inside the compiled step); ``True``: the same, and an error
        where numba does not import; ``False``: always torch's. Micro-batches,
        replay and CUDA always use torch. A runtime choice, not part of the saved state (a
        state resumes on either path).
    """

    def __init__(
        self,
        hidden: Sequence[int] | Literal["auto"] = AUTO,
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
        replay_gate: float = REPLAY_GATE,
        readout: bool = True,
        input_readout: int = 0,
        fourier: int = 0,
        contrast: float = CONTRAST,
        adapt: bool = True,
        forget_on_drift: bool = False,
        device: str = "cpu",
        dtype: str = "float32",
        threads: int | None = 1,
        compiled: bool | None = None,
    ) -> None:
        if isinstance(hidden, str) and hidden != AUTO:
            raise ConfigError(f"hidden must be layer widths or {AUTO!r}, got {hidden!r}")
        self._auto = hidden == AUTO
        # with "auto", no widths until the first sample's width fixes them (_build)
        self.hidden: tuple[int, ...] = () if self._auto else tuple(int(h) for h in hidden)
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
        self.replay_gate = float(replay_gate)
        self.readout = bool(readout)
        self.input_readout = int(input_readout)
        self.fourier = int(fourier)
        self.contrast = float(contrast)
        self.adapt = bool(adapt)
        self.forget_on_drift = bool(forget_on_drift)
        self.device = str(device)
        self.dtype = str(dtype)
        self.threads = None if threads is None else int(threads)
        self.compiled = None if compiled is None else bool(compiled)
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
        self.means_readout: Readout | None = None
        self.input_means: InputReadout | None = None
        self.expansion: FourierFeatures | None = None
        self.detector: DriftDetector | None = DriftDetector() if self.adapt else None
        self.calibration = [OnlineTemperature() for _ in range(self._n_streams)]

    def _validate_config(self) -> None:
        if not self._auto and (not self.hidden or any(h < 1 for h in self.hidden)):
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
        if not (self.replay_gate >= 0 and math.isfinite(self.replay_gate)):
            raise ConfigError(
                f"replay_gate must be a number >= 0 of expected gaps (0: no gate), "
                f"got {self.replay_gate}"
            )
        if self.input_readout < 0:
            raise ConfigError(
                f"input_readout must be >= 0 samples (its window; 0 turns it off), "
                f"got {self.input_readout}"
            )
        if self.fourier < 0:
            raise ConfigError(f"fourier must be >= 0 features (0 turns it off), got {self.fourier}")
        if not (self.contrast >= 0 and math.isfinite(self.contrast)):
            raise ConfigError(
                f"contrast must be a temperature >= 0 (0: the paper's loss), got {self.contrast}"
            )
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
        if self.compiled and not compiled_step.AVAILABLE:
            raise ConfigError("compiled=True asked for, but numba does not import")
        if self.dtype not in _DTYPES:
            raise ConfigError(f"dtype must be float32 or float64, got {self.dtype!r}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device {self.device!r} asked for, but torch sees no CUDA device")

    @property
    def depth(self) -> int:
        """Layers of the model (known before ``hidden="auto"`` has fixed their widths)."""
        return len(self.hidden) if self.hidden else AUTO_DEPTH

    def _get_params(self) -> dict[str, Any]:
        """River's parameters: a clone of an ``auto`` model is ``auto`` (its own input decides)."""
        params: dict[str, Any] = super()._get_params()
        if self._auto:
            params["hidden"] = AUTO
        return params

    @property
    def uses_compiled(self) -> bool:
        """Whether ``learn_one``/``predict_learn_one`` take the compiled step (``compiled``)."""
        if self.compiled is False or not compiled_step.AVAILABLE:
            return False
        if self._torch_device.type != "cpu" or self.dtype != "float32":
            return False
        return True

    @property
    def _n_streams(self) -> int:
        """Prediction streams with a temperature of their own: every layer, and the vote."""
        return self.depth + (self.report == "vote")

    def _temperatures(self) -> list[float]:
        """Each stream's temperature: fitted on the stream, or the model's own."""
        if not self.calibrate:
            return [self.temperature] * self._n_streams
        return [c.temperature(self.temperature) for c in self.calibration]

    def _fit_calibration(
        self, layer_scores: list[np.ndarray], k: np.ndarray, compiled: bool | None = None
    ) -> None:
        """Fold a batch's prequential scores (B, C) per layer into the temperatures; a sample of
        a class new in this batch had no prediction and is left out. ``compiled``: whether a
        one-sample batch takes the compiled step (``uses_compiled`` when None)."""
        if len(k) == 1:  # one sample: no masking (the same rows), no copies
            if k[0] >= layer_scores[0].shape[1]:
                return
            streams = list(layer_scores)
            if self.report == "vote":
                streams.append(np.mean(streams, axis=0))
            if compiled is None:
                compiled = self.uses_compiled
            for fit, one in zip(self.calibration, streams, strict=True):
                if compiled:
                    compiled_step.calibration_update(fit, one[0], int(k[0]))
                else:
                    fit.update(one, k)
            return
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
        if not self.hidden:  # hidden="auto": the input's width decides
            self.hidden = auto_hidden(n_features)
        self.scaler = Standardiser(n_features, clip=self.clip)
        if 0 < n_features <= FOURIER_MAX_FEATURES and self.fourier > 0:
            self.expansion = FourierFeatures(n_features, self.fourier, seed=self._expansion_seed)
        d_in = n_features + (self.expansion.n_out if self.expansion is not None else 0)
        widths = (d_in, *self.hidden)
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
                input_slow_decay=self._slow_decay,
            )
            for i in range(len(self.hidden))
        ]
        self._set_loss()
        if self.memory > 0:
            self.replay_memory = ReplayMemory(self.memory, n_features, seed=self._memory_seed)
        if self.readout:
            self.means_readout = Readout(self.hidden[-1:])
        if self.input_readout:
            self.input_means = self._new_input_readout(n_features)

    def _set_loss(self) -> None:
        """Give every layer the local loss asked for (``contrast``: 0, the paper's) and the
        classes it contrasts (a loaded model may replay before it learns a sample)."""
        for layer in self.layers:
            layer.contrast = self.contrast
            layer.n_known = max(layer.n_known, len(self.labels))

    def _new_input_readout(self, n_features: int) -> InputReadout:
        return InputReadout(n_features, self.input_readout, input_rules.MIX, input_rules.WEIGHT)

    @staticmethod
    def _raw(batch: np.ndarray) -> np.ndarray:
        """The input readout's rows: the raw features, a missing one (NaN) as 0."""
        return np.nan_to_num(batch, nan=0.0) if np.isnan(batch).any() else batch

    @property
    def _slow_decay(self) -> float | None:
        """The hidden statistics' decay after a new class (never faster than hidden_decay)."""
        if self.hidden_decay is None:
            return None
        return max(self.hidden_decay, NEW_CLASS_DECAY)

    @property
    def _expansion_seed(self) -> int:
        return self.seed * 1_000_003 + 999_979

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
        if self.input_means is not None:
            self.input_means.means.widen(k)
        self.feature_names = [*self.feature_names, *names]
        self.n_features += k

    def _to_tensor(self, batch: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(batch, dtype=self._torch_dtype).to(self._torch_device)

    # ------------------------------------------------------------------ forward passes

    def _scaled(self, batch: np.ndarray) -> np.ndarray:
        """The first layer's input: standardised features, behind their Fourier features."""
        assert self.scaler is not None
        if self.standardise:
            out = self.scaler.transform(batch)  # a missing feature (NaN) at its mean: 0
        else:
            out = np.nan_to_num(batch, nan=0.0) if np.isnan(batch).any() else batch
        return out if self.expansion is None else self.expansion.transform(out)

    def _forward_scores(
        self, h: torch.Tensor, stop_early: bool, raw: np.ndarray | None = None
    ) -> list[np.ndarray]:
        """Scores (B, C) of every computed layer; with ``stop_early``, stop at a confident one."""
        n_classes = len(self.labels)
        temps = self._temperatures() if stop_early else []
        out = []
        one = h.shape[0] == 1 and self.uses_compiled  # the learning step's own arithmetic
        h_one = h.numpy()[0] if one else None
        for i, layer in enumerate(self.layers):
            if h_one is not None:
                _, h_one, s = compiled_step.forward_one(layer, self._scratch(), i, h_one, n_classes)
                assert s is not None
            else:
                _, h = layer.forward(layer.normalise(h))
                s = layer.scores(h, n_classes)
            if self.means_readout is not None and i == len(self.layers) - 1:
                if h_one is not None:  # the class means as the compiled learning step scores
                    means = compiled_step.readout_scores(
                        self.means_readout.layers[0], h_one, n_classes
                    )
                    s = self.means_readout._chosen(0, s, means)
                else:
                    s = self.means_readout.combine(0, s, h.cpu().numpy())
            if self.input_means is not None and raw is not None and i == len(self.layers) - 1:
                s = self.input_means.combine(s, self._raw(raw), self.temperature)
            out.append(s)
            if stop_early and i + 1 < len(self.layers):
                conf = self._softmax(s, temps[i]).max(axis=1)  # (B,) calibrated
                if bool((conf >= self.exit_threshold).all()):
                    break
        return out

    def _no_prediction(self) -> Prediction:
        """What is predicted before any class is known."""
        return Prediction(None, 0.0, self.depth - 1, (), ())

    def _softmax(self, scores: np.ndarray, temperature: float | None = None) -> np.ndarray:
        """softmax(cos / temperature) over the last axis."""
        z = np.asarray(scores, dtype=np.float64) / (temperature or self.temperature)
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        out: np.ndarray = e / e.sum(axis=-1, keepdims=True)
        return out

    def _choose(
        self, layer_scores: list[np.ndarray], compiled: bool | None = None
    ) -> list[Prediction]:
        """Apply the report policy to per-layer scores (B, C) of a batch, with each stream's
        temperature (calibrated, unless ``calibrate`` is off). ``compiled``: whether a
        one-sample batch takes the compiled step (``uses_compiled`` when None)."""
        temps = self._temperatures()  # one per layer, then the vote's
        if layer_scores[0].shape[0] == 1 and (self.uses_compiled if compiled is None else compiled):
            return [self._choose_one(layer_scores, temps)]
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

    def _choose_one(self, layer_scores: list[np.ndarray], temps: list[float]) -> Prediction:
        """``_choose`` for one sample on the compiled path: each layer's top class and its
        softmax probability in one compiled call (``kernels.softmax_top``)."""
        top_of = compiled_step.softmax_top
        tops, confs_l = [], []
        for s, t in zip(layer_scores, temps, strict=False):
            top, conf = top_of(s[0], t or self.temperature)
            tops.append(top)
            confs_l.append(conf)
        confs = tuple(confs_l)
        if self.report == "vote":
            labels = tuple(self.labels[t] for t in tops)
            summed = np.sum([s[0] for s in layer_scores], axis=0)
            top, conf = top_of(summed, temps[-1] * len(layer_scores) or self.temperature)
            return Prediction(self.labels[top], conf, -1, labels, confs)
        return self._prediction(tops, confs)

    def _prediction(self, tops: list[int], confs: tuple[float, ...]) -> Prediction:
        """The reported Prediction (``report`` other than a vote) from each layer's top class
        index and its probability."""
        labels = tuple([self.labels[t] for t in tops])
        if self.report == "confident":
            chosen = int(np.argmax(confs))
        elif self.report == "early_exit":  # the first confident layer; later ones unused
            confident = [i for i, c in enumerate(confs) if c >= self.exit_threshold]
            chosen = confident[0] if confident else len(confs) - 1
            labels, confs = labels[: chosen + 1], confs[: chosen + 1]
        else:
            chosen = len(confs) - 1
        return Prediction(labels[chosen], confs[chosen], chosen, labels, confs)

    def _predict_matrix(self, batch: np.ndarray) -> list[Prediction]:
        if not self.labels or self.n_features is None:
            return [self._no_prediction()] * batch.shape[0]
        with torch.inference_mode():
            h = self._to_tensor(self._scaled(batch))
            scores = self._forward_scores(h, self.report == "early_exit", batch)
            return self._choose(scores)

    def _learn_matrix(
        self, batch: np.ndarray, ys: Sequence[Label], predict: bool
    ) -> list[Prediction] | None:
        """Predict (optionally) and learn a batch in one forward pass."""
        assert self.scaler is not None
        known = len(self.labels)  # predictions may only use classes known before this batch
        # the callers have checked all of ys with check_label_kinds (True == 1 would merge here)
        for y in dict.fromkeys(ys) if len(ys) > 1 else ys:
            if y not in self._index:
                self._index[y] = len(self.labels)
                self.labels.append(y)
                for layer in self.layers:
                    if layer.input_norm is not None:
                        layer.input_norm.slow_down(NEW_CLASS_SPAN)
                if self.detector is not None:
                    self.detector.new_class(self.n_learned)
        ensured = getattr(self, "_ensured", None)  # (classes, layers) the vectors were made for
        if ensured is None or ensured[0] != len(self.labels) or ensured[1] is not self.layers:
            for layer in self.layers:
                layer.ensure_classes(len(self.labels))
            self._ensured = (len(self.labels), self.layers)
        predict_now = predict and known > 0
        score_now = known > 0 and (predict or self.calibrate)  # learning is the same either way
        scores: list[np.ndarray] = []
        boost = self._boost()
        if batch.shape[0] == 1 and (fused := self._fused_buffers()) is not None:
            k_one = self._index[ys[0]]
            return self._learn_fused(batch, fused, k_one, known, predict, score_now, boost)
        if batch.shape[0] == 1 and self.uses_compiled:
            scores, k_np = self._learn_compiled(batch, self._index[ys[0]], known, score_now, boost)
            return self._after_learning(
                batch, k_np, scores, predict, predict_now, score_now, compiled=True
            )
        with torch.inference_mode():
            k = torch.tensor([self._index[y] for y in ys], device=self._torch_device)  # (B,)
            one = None
            if batch.shape[0] == 1:
                one = self._standardise_one(batch, np.float32 if self.dtype == "float32" else float)
            if one is not None:
                h = torch.from_numpy(one)[None, :].to(self._torch_device)
            else:
                h = self._to_tensor(self._scaled(batch))
                if self.standardise:
                    self.scaler.update(batch)
            for i, layer in enumerate(self.layers):
                h_in = layer.normalise(h)
                z, out = layer.forward(h_in)
                vec = layer.scores(out, known) if score_now else None
                if self.means_readout is not None and i == len(self.layers) - 1:
                    vec = self.means_readout.learn(0, vec, out.cpu().numpy(), k.cpu().numpy())
                if self.input_means is not None and i == len(self.layers) - 1:
                    vec = self.input_means.learn(
                        vec, self._raw(batch), k.cpu().numpy(), self.temperature
                    )
                if score_now:
                    assert vec is not None
                    scores.append(vec)
                lr = self.lr * math.sqrt(layer.d_out / REFERENCE_WIDTH) * boost
                layer.update(h_in, z, out, k, lr)
                layer.observe(h)
                h = out  # the next layer receives y, computed before this layer's update
        return self._after_learning(
            batch, k.cpu().numpy(), scores, predict, predict_now, score_now, compiled=False
        )

    def _boost(self) -> float:
        """The step-size multiplier now: the drift detector's (1 without one)."""
        return 1.0 if self.detector is None else self.detector.boost(self.n_learned)

    def _after_learning(
        self,
        batch: np.ndarray,
        k: np.ndarray,
        scores: list[np.ndarray],
        predict: bool,
        predict_now: bool,
        score_now: bool,
        compiled: bool = False,
    ) -> list[Prediction] | None:
        """Count, watch for drift, predict, calibrate and remember a learned batch (``compiled``:
        one sample that took the compiled step, which model state cannot change in between)."""
        self.n_learned += batch.shape[0]
        if score_now and self.detector is not None:
            self._watch(scores[-1], k)
        # before this batch's calibration
        preds = self._choose(scores, compiled) if predict_now else None
        if score_now and self.calibrate:
            self._fit_calibration(scores, k, compiled)
        if self.replay_memory is not None:
            self._remember(batch, k.tolist())
        if not predict:
            return None
        return preds or [self._no_prediction()] * batch.shape[0]

    def _scratch(self) -> compiled_step.Buffers:
        """The compiled step's per-layer scratch vectors, rebuilt when a layer's shape changed."""
        buffers: compiled_step.Buffers | None = getattr(self, "_buffers", None)
        if buffers is None or not buffers.fits(self.layers):
            buffers = self._buffers = compiled_step.Buffers(self.layers)
        return buffers

    def _learn_compiled(
        self, batch: np.ndarray, k: int, known: int, score_now: bool, boost: float
    ) -> tuple[list[np.ndarray], np.ndarray]:
        """The layers' part of ``_learn_matrix`` for one sample, through the compiled step."""
        assert self.scaler is not None
        buffers = self._scratch()
        x = self._standardise_one(batch, np.float32)
        if x is None:  # a missing feature, Fourier features or raw input: numpy's path
            x = np.ascontiguousarray(self._scaled(batch)[0], dtype=np.float32)
            if self.standardise:
                self.scaler.update(batch)
        lrs = buffers.lrs(self.layers, self.lr, REFERENCE_WIDTH, boost)
        scores, out = compiled_step.step(self.layers, buffers, x, k, known, score_now, lrs)
        if self.means_readout is not None:
            vec = compiled_step.readout_learn(
                self.means_readout, scores[-1] if score_now else None, out, k
            )
            if score_now:
                scores[-1] = vec
        k_np = np.array([k], dtype=np.int64)
        if self.input_means is not None:
            mixed = self.input_means.learn(
                scores[-1] if score_now else None, self._raw(batch), k_np, self.temperature
            )
            if score_now:
                assert mixed is not None
                scores[-1] = mixed
        return scores, k_np

    def _fused_buffers(self) -> compiled_step.Buffers | None:
        """The compiled step's buffers where a one-sample step takes the fused path
        (``uses_compiled``, ``compiled.FUSED``, not a vote, no input readout), else None.

        The decision is kept (``_fused_plan``) while what it rests on stays: the same layer list
        and weight tensors (a grown input, a loaded state or new layers replace them) and the
        same ``compiled``, ``dtype``, ``device``, ``report``, ``input_means`` and ``FUSED``
        objects; any of them changed, it is made again. Checked by identity, per sample."""
        plan = getattr(self, "_fused_plan", None)
        layers = self.layers
        if (
            plan is not None
            and plan[0] is layers
            and plan[1] is self.compiled
            and plan[2] is self.dtype
            and plan[3] is self.device
            and plan[4] is self.report
            and plan[5] is self.input_means
            and plan[6] is compiled_step.FUSED
            and len(plan[7]) == len(layers)
        ):
            for layer, w in zip(layers, plan[7], strict=True):
                if layer.weight is not w:
                    break
            else:
                kept: compiled_step.Buffers | None = plan[8]
                return kept
        fused = (
            compiled_step.FUSED
            and self.report != "vote"
            and self.input_means is None
            and self.uses_compiled
        )
        buffers = self._scratch() if fused else None
        weights = tuple(layer.weight for layer in layers)
        self._fused_plan = (
            layers, self.compiled, self.dtype, self.device, self.report, self.input_means,
            compiled_step.FUSED, weights, buffers,
        )  # fmt: skip
        return buffers

    def _learn_fused(
        self,
        batch: np.ndarray,
        buffers: compiled_step.Buffers,
        k: int,
        known: int,
        predict: bool,
        score_now: bool,
        boost: float,
    ) -> list[Prediction] | None:
        """``_learn_compiled`` then ``_after_learning`` for one sample, its scores in reused
        buffers and its readout, prediction and temperature fits in two compiled calls
        (``readout_learn_one``, ``choose_calibrate``): the same numbers. Not for a vote (its
        stream is the layers' mean) nor the input readout (it mixes the scores in numpy).
        ``buffers``: ``_fused_buffers``'s, which serve these layers."""
        scaler = self.scaler
        assert scaler is not None
        x = buffers.x  # layer 0's input, read within this sample only
        if not (
            self.standardise
            and self.expansion is None
            and compiled_step.standardise_one(scaler, batch[0], x)
        ):  # a missing feature, Fourier features or raw input: numpy's path
            x = np.ascontiguousarray(self._scaled(batch)[0], dtype=np.float32)
            if self.standardise:
                scaler.update(batch)
        layers = self.layers
        lrs = buffers.lrs(layers, self.lr, REFERENCE_WIDTH, boost)
        s, means = buffers.scores(known)
        _, out = compiled_step.step(layers, buffers, x, k, known, score_now, lrs, into=s)
        use_means = False
        if self.means_readout is not None:
            vec = s[-1] if score_now else None
            use_means = compiled_step.readout_learn_one(self.means_readout, vec, out, k, means)
        self.n_learned += 1
        predict_now = predict and known > 0
        if score_now:
            calibrate = self.calibrate and k < known
            if predict_now:  # each stream's temperature
                buffers.temps[:] = self._temperatures()
            top = compiled_step.choose_calibrate(
                self.calibration, buffers, s, means, use_means, k, predict_now, calibrate
            )
            detector = self.detector
            if detector is not None and k < known:
                if detector.observe_one(top != k, self.n_learned):
                    self._drifted()
        preds = None
        if predict_now:
            preds = [self._prediction(buffers.tops.tolist(), tuple(buffers.confs.tolist()))]
        mem = self.replay_memory
        if mem is not None:  # _remember of one sample, without its loop
            mem.add(batch[0], k)
            self._replay_if_due(mem, 1)
        if not predict:
            return None
        return preds or [self._no_prediction()]

    def _standardise_one(self, batch: np.ndarray, dtype: type) -> np.ndarray | None:
        """The first layer's input for one sample (1, d) in ``dtype`` and the standardiser's
        update, in one compiled call (the same numbers as ``_scaled`` then ``scaler.update``);
        None, nothing done, where that does not apply: no numba, Fourier features, raw input,
        or a missing feature."""
        if not (compiled_step.AVAILABLE and self.standardise and self.expansion is None):
            return None
        assert self.scaler is not None
        x: np.ndarray = np.empty(batch.shape[1], dtype=dtype)
        return x if compiled_step.standardise_one(self.scaler, batch[0], x) else None

    def _watch(self, scores: np.ndarray, k: np.ndarray) -> None:
        """Feed the last layer's prequential errors (B, C scores) to the drift detector; on a
        change, shorten the input standardiser's memory (the step boost follows the clock)."""
        assert self.detector is not None and self.scaler is not None
        if len(k) == 1:  # one sample: its error alone (nothing when its class is new)
            if k[0] >= scores.shape[1]:
                return
            errors = np.array([int(scores[0].argmax()) != k[0]])
        else:
            old = k < scores.shape[1]
            errors = scores[old].argmax(axis=1) != k[old]
        self._errors(errors)

    def _errors(self, errors: np.ndarray) -> None:
        """``_watch``'s errors (B,) to the detector, the standardisers shortened on a change."""
        assert self.detector is not None
        if self.detector.observe(errors, self.n_learned):
            self._drifted()

    def _drifted(self) -> None:
        """A change detected: the standardisers' memory shortened (and, with
        ``forget_on_drift``, the replay memory emptied)."""
        assert self.scaler is not None
        if self.forget_on_drift and self.replay_memory is not None:
            self.replay_memory.clear()
        if drift_rules.SCALER_KEEP:
            self.scaler.shorten(drift_rules.SCALER_KEEP)
        if self.input_means is not None and input_rules.DRIFT_KEEP:
            self.input_means.means.shorten(input_rules.DRIFT_KEEP)

    def _remember(self, batch: np.ndarray, ks: list[int]) -> None:
        """Offer the learned samples to the memory; rehearse stored ones when a replay is due."""
        mem = self.replay_memory
        assert mem is not None
        for row, k in zip(batch, ks, strict=True):
            mem.add(row, k)
        self._replay_if_due(mem, len(ks))

    def _replay_if_due(self, mem: ReplayMemory, n: int) -> None:
        """Count n newly learned samples; rehearse once ``replay_every`` have come since the
        last replay."""
        mem.pending += n
        if mem.pending >= self.replay_every:
            self._replay(mem)

    def _replay(self, mem: ReplayMemory) -> None:
        """A replay due (``pending`` samples since the last): rehearse the classes' shortfall."""
        # Rehearse what the stream has stopped showing: the classes' shortfall (long-run share
        # minus recent share) sets both how many replays and which classes. Scaled so that a
        # recent stream of one class among C replays ``replay`` per sample (at most twice that);
        # an i.i.d. stream, where every class keeps coming, is barely replayed. Only classes
        # that have gone (replay_gate) count: a class whose share merely fell is not rehearsed.
        shortfall = mem.shortfall(self.replay_gate)
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
        if len(ks) == 1 and not REPLAY_OBSERVE and self.uses_compiled:  # a replay of one
            assert self.scaler is not None
            if self.standardise and self.expansion is None:
                x = np.empty(raw.shape[1], dtype=np.float32)
                compiled_step.standardise_row(self.scaler, raw[0], x)
            else:
                x = np.ascontiguousarray(self._scaled(raw)[0], dtype=np.float32)
            buffers = self._scratch()
            lrs = buffers.lrs(self.layers, self.lr, REFERENCE_WIDTH, REPLAY_WEIGHT)
            last = compiled_step.rehearse_one(self.layers, buffers, x, int(ks[0]), lrs)
            if self.means_readout is not None:
                compiled_step.readout_rehearse(self.means_readout, last, int(ks[0]))
            return
        self._rehearse_torch(raw, ks)

    @_on_threads
    def _rehearse_torch(self, raw: np.ndarray, ks: np.ndarray) -> None:
        """``_rehearse`` through torch, on ``threads`` threads (the compiled step's caller,
        ``predict_learn_one``, leaves torch's count alone)."""
        with torch.inference_mode():
            k = torch.as_tensor(ks, device=self._torch_device)  # (B,)
            h = self._to_tensor(self._scaled(raw))
            for i, layer in enumerate(self.layers):
                h_in = layer.normalise(h)
                z, out = layer.forward(h_in)
                if self.means_readout is not None and i == len(self.layers) - 1:
                    self.means_readout.rehearse(0, out.cpu().numpy(), ks)
                # summed, not averaged, over the batch: each replay steps as a new sample does
                lr = self.lr * math.sqrt(layer.d_out / REFERENCE_WIDTH) * len(ks) * REPLAY_WEIGHT
                layer.update(h_in, z, out, k, lr)
                if REPLAY_OBSERVE:
                    layer.observe(h)
                h = out

    # ------------------------------------------------------------------ River API

    def learn_one(self, x: object, y: object, **kwargs: Any) -> None:
        """Learn one labelled sample: standardise, then each layer forwards and updates."""
        self.predict_learn_one(x, y, predict=False)

    def predict_learn_one(self, x: object, y: object, predict: bool = True) -> Prediction | None:
        """Predict ``x`` as ``predict_one`` would, then learn ``(x, y)``, in one forward pass.

        This is test-then-train for the price of one pass: each layer's prediction uses its
        output before its own update, which is exactly what ``predict_one`` would have seen.
        """
        label = check_label(y)
        new: list[Hashable] = []
        if type(x) is np.ndarray:  # _rows of a vector
            batch = as_vector(x, self.feature_names, self.n_features)[None, :]
        else:
            batch, new = self._rows([x])
        labels = self.labels
        ensured = getattr(self, "_ensured", None)
        if (  # the fused compiled step of a known class, no new feature: no torch op in it
            not new
            and label in self._index
            and type(label) is type(labels[0])  # check_label_kinds (True == 1 is no int)
            and ensured is not None
            and ensured[0] == len(labels)
            and ensured[1] is self.layers
            and (fused := self._fused_buffers()) is not None
        ):  # _learn_matrix's step, nothing to add (its class known, its vectors made)
            k, score_now = self._index[label], predict or self.calibrate  # a class known
            boost = self._boost()  # torch's threads untouched
            preds = self._learn_fused(batch, fused, k, len(labels), predict, score_now, boost)
        else:
            preds = self._predict_learn_threads(batch, new, label, predict)
        return preds[0] if preds else None

    @_on_threads
    def _predict_learn_threads(
        self, batch: np.ndarray, new: list[Hashable], label: Label, predict: bool
    ) -> list[Prediction] | None:
        """``predict_learn_one``'s step on ``threads`` torch threads (it may use torch)."""
        check_label_kinds([label], self.labels)  # before the input grows
        self._commit_input(batch.shape[1], new)
        return self._learn_matrix(batch, [label], predict)

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
            scores = self._forward_scores(h, self.report == "early_exit", vec[None, :])
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
            scores = self._forward_scores(h, False, vec[None, :])
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
            "hidden": list(self.hidden) if self.hidden else AUTO,
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
            "replay_gate": self.replay_gate,
            "readout": self.readout,
            "input_readout": self.input_readout,
            "fourier": self.fourier,
            "contrast": self.contrast,
            "adapt": self.adapt,
            "forget_on_drift": self.forget_on_drift,
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
        if self.means_readout is not None:
            total += self.means_readout.nbytes()
        if self.input_means is not None:
            total += self.input_means.nbytes()
        if self.expansion is not None:
            total += self.expansion.nbytes()
        if self.detector is not None:
            total += self.detector.nbytes()
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
        if self.means_readout is not None:
            for key, arr in self.means_readout.state().items():
                state[f"readout.{key}"] = arr
        if self.input_means is not None:
            for key, arr in self.input_means.state().items():
                state[f"input_readout.{key}"] = arr
        for i, fit in enumerate(self.calibration):
            for key, arr in fit.state().items():
                state[f"calibration.{i}.{key}"] = arr
        if self.expansion is not None:
            for key, arr in self.expansion.state().items():
                state[f"expansion.{key}"] = arr
        if self.detector is not None:
            for key, arr in self.detector.state().items():
                state[f"drift.{key}"] = arr
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
            # a state saved before the expansion and the detector existed had neither
            # (and one saved before the contrastive loss, the paper's loss)
            # (and one saved before forget_on_drift kept its memory through a drift)
            # (and one saved before replay_gate rehearsed every class short of its share)
            config = {
                "replay_gate": 0.0,
                "fourier": 0,
                "adapt": False,
                "contrast": 0.0,
                "forget_on_drift": False,
                **state["config"],
                **overrides,
            }
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
                if not model.hidden:  # an "auto" config beside built layers: not ours
                    raise ModelError(
                        "model state is corrupt: it has layers but its config's hidden is 'auto'"
                    )
                model.scaler = Standardiser(model.n_features, clip=model.clip)
                keys = ("count", "mean", "m2", *(["counts"] if "scaler.counts" in state else []))
                model.scaler.load({k: state[f"scaler.{k}"] for k in keys})
                if "expansion.omega" in state:
                    model.expansion = FourierFeatures.from_state(
                        {k: state[f"expansion.{k}"] for k in ("omega", "phase")}
                    )
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
                        input_slow_decay=model._slow_decay,
                    )
                    for i in range(len(model.hidden))
                ]
                model._set_loss()
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
                saved = {
                    k.removeprefix("readout."): v
                    for k, v in state.items()
                    if k.startswith("readout.")
                }  # an older state has none: its readout starts empty, as a new class's does
                widths = model.hidden[-1:]  # the readout reads the last layer
                if model.readout:
                    model.means_readout = (
                        Readout.from_state(saved, widths) if saved else Readout(widths)
                    )
                if model.input_readout:
                    saved = {
                        k.removeprefix("input_readout."): v
                        for k, v in state.items()
                        if k.startswith("input_readout.")
                    }
                    model.input_means = (
                        InputReadout.from_state(
                            saved, model.input_readout, input_rules.MIX, input_rules.WEIGHT
                        )
                        if saved
                        else model._new_input_readout(model.n_features)
                    )
            model.calibration = [  # a stream saved without one (older states) starts its fit
                OnlineTemperature.from_state(
                    {k: state[f"calibration.{i}.{k}"] for k in ("nll", "n")}
                )
                if f"calibration.{i}.nll" in state
                else OnlineTemperature()
                for i in range(model._n_streams)
            ]
            if model.detector is not None and "drift.stats" in state:
                model.detector = DriftDetector.from_state(
                    {k: state[f"drift.{k}"] for k in ("stats", "counts")}
                )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"model state is incomplete or corrupt: {exc!r}") from None
        return model

    def __repr__(self) -> str:
        return f"SpelaMLP({json.dumps(self.config())[1:-1]}, n_learned={self.n_learned})"
