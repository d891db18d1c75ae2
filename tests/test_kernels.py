"""The compiled per-sample step (numba) against torch's: same weights, predictions and state."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from spela_stream import SpelaMLP
from spela_stream import compiled as compiled_step
from spela_stream.errors import ConfigError

needs_numba = pytest.mark.skipif(not compiled_step.AVAILABLE, reason="numba does not import")

N = 300


def _stream(n: int, d: int, n_classes: int, seed: int) -> tuple[np.ndarray, list[int]]:
    gen = np.random.default_rng(seed)
    centres = gen.normal(size=(n_classes, d)) * 2.0
    y = gen.integers(0, n_classes, n)
    X = centres[y] + gen.normal(size=(n, d))
    X[:, 0] = X[:, 0] * 100 + 50  # a feature of its own scale: the standardiser matters
    return X, y.tolist()


def _pair(**params: Any) -> tuple[SpelaMLP, SpelaMLP]:
    return SpelaMLP(**params, compiled=True), SpelaMLP(**params, compiled=False)


def _assert_same_state(a: SpelaMLP, b: SpelaMLP, atol: float = 2e-4) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        if isinstance(sa[key], np.ndarray) and sa[key].dtype.kind == "f":
            scale = max(1.0, float(np.abs(sb[key]).max(initial=0.0)))
            np.testing.assert_allclose(sa[key], sb[key], rtol=1e-3, atol=atol * scale, err_msg=key)
        else:
            assert np.array_equal(np.asarray(sa[key]), np.asarray(sb[key])), key


CONFIGS = [
    {"hidden": (16,), "lr": 0.5},
    {"hidden": (32, 24, 16), "report": "vote"},
    {"hidden": (24, 24), "hidden_decay": None, "readout": False, "adapt": False},
    {"hidden": (32, 32), "fourier": 16, "memory": 50, "replay_every": 5},
    {"hidden": (20, 20), "report": "early_exit", "calibrate": False, "standardise": False},
    {"hidden": (32, 32), "contrast": 0.1, "memory": 50, "replay_every": 5},
    # a second layer past TORCH_PRODUCT (128 x 96): torch's product inside the compiled step
    {"hidden": (128, 96), "memory": 50, "replay_every": 5},
]


@needs_numba
@pytest.mark.parametrize("params", CONFIGS)
def test_compiled_step_equals_torch_step(params: dict[str, Any]) -> None:
    X, y = _stream(N, 6, 4, seed=1)
    fast, slow = _pair(**params, seed=3)
    assert fast.uses_compiled and not slow.uses_compiled
    agree = 0
    for xi, yi in zip(X, y, strict=True):
        pf, ps = fast.predict_learn_one(xi, yi), slow.predict_learn_one(xi, yi)
        assert pf is not None and ps is not None
        agree += pf.label == ps.label
        assert pf.confidence == pytest.approx(ps.confidence, abs=1e-3) or pf.label != ps.label
    assert agree >= N - 3  # a near tie may flip on float32 rounding; nothing more
    _assert_same_state(fast, slow)


@needs_numba
@pytest.mark.parametrize("contrast", [0.0, 0.1])
def test_new_classes_midstream_and_dict_features_that_grow(contrast: float) -> None:
    fast, slow = _pair(hidden=(16, 16), seed=0, contrast=contrast)
    gen = np.random.default_rng(5)
    agree = 0
    for i in range(N):
        n_classes = 2 + i // 100  # a class arrives at 100 and at 200: slowed statistics
        row = {f"f{j}": float(gen.normal()) for j in range(3 + (i >= 150))}
        label = int(gen.integers(0, n_classes))
        pf, ps = fast.predict_learn_one(row, label), slow.predict_learn_one(row, label)
        assert pf is not None and ps is not None
        agree += pf.label == ps.label
    assert agree >= N - 3
    assert fast.layers[1].input_norm is not None and fast.layers[1].input_norm.slow_until > 0
    _assert_same_state(fast, slow)
    assert fast.predict_many([{"f0": 1.0, "f1": 0.0}]) == slow.predict_many(
        [{"f0": 1.0, "f1": 0.0}]
    )


@needs_numba
def test_a_checkpoint_resumes_on_either_path() -> None:
    X, y = _stream(2 * N, 5, 3, seed=2)
    first = SpelaMLP(hidden=(24, 24), compiled=True)
    for xi, yi in zip(X[:N], y[:N], strict=True):
        first.learn_one(xi, yi)
    state = first.state_dict()
    ref = SpelaMLP(hidden=(24, 24), compiled=False)
    for xi, yi in zip(X[:N], y[:N], strict=True):
        ref.learn_one(xi, yi)
    assert state.keys() == ref.state_dict().keys()  # one format on both paths
    fast = SpelaMLP.from_state(state, compiled=True)
    slow = SpelaMLP.from_state(state, compiled=False)
    for xi, yi in zip(X[N:], y[N:], strict=True):
        fast.learn_one(xi, yi)
        slow.learn_one(xi, yi)
    _assert_same_state(fast, slow)


@needs_numba
def test_compiled_is_the_cpu_default_and_a_runtime_choice() -> None:
    model = SpelaMLP(hidden=(8,))
    assert model.compiled is None and model.uses_compiled
    assert "compiled" not in model.config()
    assert not SpelaMLP(hidden=(8,), dtype="float64").uses_compiled
    assert model.clone({"compiled": False}).uses_compiled is False
    wide = SpelaMLP(hidden=(600,))
    wide.learn_one(np.ones(500), "a")  # 300,000 weights: compiled, torch's product inside
    assert wide.uses_compiled
    assert not SpelaMLP.from_state(wide.state_dict(), compiled=False).uses_compiled


@needs_numba
def test_a_wide_first_layer_takes_torchs_product_with_the_same_numbers() -> None:
    # 100 -> 120: 12,000 weights past TORCH_PRODUCT, the layer's input the standardised sample
    # (no input statistics of its own); prediction-only calls take the same product
    X, y = _stream(N, 100, 5, seed=4)
    assert 100 * 120 > compiled_step.TORCH_PRODUCT >= 120 * 8
    fast, slow = _pair(hidden=(120, 8), seed=1)
    agree = 0
    for xi, yi in zip(X, y, strict=True):
        pf, ps = fast.predict_learn_one(xi, yi), slow.predict_learn_one(xi, yi)
        assert pf is not None and ps is not None
        agree += pf.label == ps.label
    assert agree >= N - 3
    _assert_same_state(fast, slow)
    assert fast._scratch().wide == [True, False]
    probe = X[:20]
    assert [fast.predict_one(x) for x in probe] == [slow.predict_one(x) for x in probe]
    # the buffers first built by a prediction (under torch's inference mode) serve learning
    fresh = SpelaMLP.from_state(fast.state_dict())
    assert fresh.predict_one(X[0]) == fast.predict_one(X[0])
    fresh.learn_one(X[0], y[0])
    fast.learn_one(X[0], y[0])
    _assert_same_state(fresh, fast, atol=0.0)


def test_without_numba_the_default_falls_back_to_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiled_step, "AVAILABLE", False)
    model = SpelaMLP(hidden=(8,))
    assert not model.uses_compiled
    model.learn_one(np.ones(3), "a")
    assert model.n_learned == 1
    with pytest.raises(ConfigError, match="numba"):
        SpelaMLP(compiled=True)


@needs_numba
def test_learn_many_keeps_torch() -> None:
    X, y = _stream(64, 4, 3, seed=4)
    fast, slow = _pair(hidden=(16,))
    fast.learn_many(X, y)
    slow.learn_many(X, y)
    _assert_same_state(fast, slow, atol=1e-6)


@needs_numba
def test_fused_readout_and_standardiser_equal_numpys() -> None:
    """The compiled step's class-mean readout and input standardiser (one kernel each) give
    numpy's numbers: the statistics exactly (elementwise arithmetic), the readout's cosines
    within float64 rounding (sums in another order), the chosen readout and hits exactly."""
    from spela_stream.readout import Readout
    from spela_stream.scaling import Standardiser

    gen = np.random.default_rng(3)
    X, y = _stream(400, 6, 5, seed=3)
    ref, fast = Standardiser(6, clip=5.0), Standardiser(6, clip=5.0)
    out = np.empty(6, dtype=np.float32)
    for row in X:
        expect = ref.transform(row).astype(np.float32)
        ref.update(row)
        assert compiled_step.standardise_one(fast, row, out)
        assert np.array_equal(out, expect)
    for a, b in ((ref.mean, fast.mean), (ref.m2, fast.m2), (ref.counts, fast.counts)):
        assert np.array_equal(a, b)
    assert not compiled_step.standardise_one(fast, np.array([1.0, np.nan, 0, 0, 0, 0]), out)
    assert fast.count == ref.count  # a missing value: nothing done, numpy's path takes it

    ref_r, fast_r = Readout((16,)), Readout((16,))
    for i, c in enumerate(gen.integers(0, 7, 600).tolist()):
        h = (gen.normal(size=16) + c).astype(np.float32)
        known = min(c + 2, 7) if i else 0
        vec = gen.normal(size=(1, known)).astype(np.float32) if known else None
        a = ref_r.learn(0, vec, h[None, :], np.array([c]))
        b = compiled_step.readout_learn(fast_r, vec, h, c)
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(
            compiled_step.readout_scores(fast_r.layers[0], h, 7),
            ref_r.layers[0].scores(h[None, :], 7),
            rtol=1e-12,
            atol=1e-12,
        )
    assert np.array_equal(ref_r.hits, fast_r.hits)
    for key, arr in ref_r.state().items():
        assert np.array_equal(arr, fast_r.state()[key]), key


@needs_numba
def test_a_replay_of_one_sample_compiled_equals_torchs() -> None:
    """``_rehearse`` of one stored sample takes the compiled step on the compiled path: the
    layers and the class means move as torch's replay moves them, input statistics stay."""
    X, y = _stream(200, 6, 4, seed=5)
    a, b = _pair(hidden=(24, 16), seed=5, memory=50)
    for xi, yi in zip(X, y, strict=True):
        a.learn_one(xi, yi)
    b = SpelaMLP.from_state(a.state_dict(), compiled=False)
    assert a.uses_compiled and not b.uses_compiled
    stats = [layer.input_norm.state() for layer in a.layers if layer.input_norm is not None]
    for row, k in zip(X[:20], [a._index[v] for v in y[:20]], strict=True):
        a._rehearse(row[None, :], np.array([k]))
        b._rehearse(row[None, :], np.array([k]))
    _assert_same_state(a, b, atol=1e-5)
    after = [layer.input_norm.state() for layer in a.layers if layer.input_norm is not None]
    for old, new in zip(stats, after, strict=True):
        for key in old:
            assert np.array_equal(old[key], new[key]), key


@needs_numba
def test_compiled_calibration_and_softmax_equal_numpys() -> None:
    """One sample's temperature fit and top softmax probability, compiled, give numpy's numbers
    within float64 rounding (their sums run in order); the top class the same."""
    from spela_stream.calibration import OnlineTemperature

    gen = np.random.default_rng(7)
    ref, fast = OnlineTemperature(), OnlineTemperature()
    model = SpelaMLP()
    for i in range(300):
        n_classes = 1 + i % 12
        s = gen.uniform(-1, 1, size=(1, n_classes)).astype(np.float32 if i % 2 else np.float64)
        k = int(gen.integers(n_classes))
        ref.update(s, np.array([k]))
        compiled_step.calibration_update(fast, s[0], k)
        t = ref.temperature(0.1)
        assert fast.temperature(0.1) == pytest.approx(t, rel=1e-9)
        p = model._softmax(s, t)[0]
        top, conf = compiled_step.softmax_top(s[0], t)
        assert top == int(p.argmax()) and conf == pytest.approx(float(p[top]), rel=1e-12)
    assert fast.n == ref.n
    np.testing.assert_allclose(fast.nll, ref.nll, rtol=1e-12)


@needs_numba
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_paths_numbers_do_not_depend_on_numba(
    monkeypatch: pytest.MonkeyPatch, dtype: str
) -> None:
    """The torch path standardises one sample through the compiled kernel where numba imports:
    elementwise, so every prediction and the whole state are the same bit for bit as without."""
    X, y = _stream(N, 5, 3, seed=9)
    # dicts, a feature missing now and then: numpy's path for that sample
    rows = [
        {f"f{j}": v for j, v in enumerate(x.tolist()) if i % 17 != 5 or j != 2}
        for i, x in enumerate(X)
    ]

    def run() -> tuple[list[Any], dict[str, Any]]:
        model = SpelaMLP(hidden=(16, 8), compiled=False, dtype=dtype, memory=40)
        preds = [model.predict_learn_one(xi, yi) for xi, yi in zip(rows, y, strict=True)]
        return preds, model.state_dict()

    fast_preds, fast = run()
    monkeypatch.setattr(compiled_step, "AVAILABLE", False)
    ref_preds, ref = run()
    assert fast_preds == ref_preds
    assert fast.keys() == ref.keys()
    for key in ref:
        a, b = np.asarray(fast[key]), np.asarray(ref[key])
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), key


@needs_numba
def test_the_one_sample_paths_kept_state_equals_recomputing_it() -> None:
    # the compiled step keeps its step sizes (per boost), the class-vector check (per class
    # count) and each stream's fitted temperature (per fitted count) between samples; with all
    # recomputed every sample the numbers are the same, bit for bit, through new classes, a
    # drift's boost and replays
    a, b = (SpelaMLP(hidden=(16, 16), memory=40, seed=3) for _ in range(2))
    assert a.uses_compiled
    gen = np.random.default_rng(7)
    boosts = set()
    for i in range(600):
        n_classes = 2 + (i >= 150) + (i >= 300)
        label = int(gen.integers(0, n_classes))
        row = gen.normal(size=5) + np.eye(5)[label] * 3
        assert a.detector is not None and b.detector is not None
        if i == 400:  # a detected change, on both: the step is boosted for the rest
            a.detector.changed_at = b.detector.changed_at = b.n_learned
        boosts.add(b.detector.boost(b.n_learned))
        if i:
            b._buffers._lrs = None
            b._ensured = None
            for fit in b.calibration:
                fit.fitted = None  # the temperature fitted by numpy from nll, as before
        pa, pb = a.predict_learn_one(row, label), b.predict_learn_one(row, label)
        assert pa == pb
    assert len(boosts) > 2  # the cache was keyed on more than one boost
    sa, sb = a.state_dict(), b.state_dict()
    for key in sa:
        assert np.array_equal(np.asarray(sa[key]), np.asarray(sb[key])), key


@needs_numba
@pytest.mark.parametrize("clip", [5.0, None])
def test_a_replays_compiled_standardising_equals_numpys(clip: float | None) -> None:
    """A replay's row (raw float32, NaN where a feature was missing) standardised in one kernel
    gives ``Standardiser.transform``'s numbers in float32, bit for bit: before any sample, with a
    feature never seen, with missing values and past the clip."""
    from spela_stream.scaling import Standardiser

    X, _ = _stream(300, 6, 4, seed=6)
    X[:, 5] = np.nan  # never seen: scale 0
    scaler = Standardiser(6, clip=clip)
    gen = np.random.default_rng(6)
    out = np.empty(6, dtype=np.float32)
    for i, row in enumerate(X):
        raw = (row * (1 + 3 * (i % 7 == 0))).astype(np.float32)  # every 7th far out: clipped
        raw[gen.random(6) < 0.2] = np.nan
        compiled_step.standardise_row(scaler, raw, out)
        expect = scaler.transform(raw[None, :])[0].astype(np.float32)
        assert np.array_equal(out, expect), i
        scaler.update(row)


@needs_numba
def test_the_compiled_temperature_fit_equals_numpys() -> None:
    """kernels.fitted_temperature gives OnlineTemperature.temperature's float for the same
    sums, bit for bit: minima inside, at either end, tied, on flat or concave neighbours."""
    from spela_stream import kernels
    from spela_stream.calibration import GRID, OnlineTemperature

    gen = np.random.default_rng(9)
    fit = OnlineTemperature()
    fit.n = 100
    cases = [gen.normal(size=len(GRID)) for _ in range(500)]
    cases += [np.linspace(0, 1, len(GRID)), np.linspace(1, 0, len(GRID)), np.zeros(len(GRID))]
    bowl = (np.arange(len(GRID)) - 20.0) ** 2
    cases += [bowl, bowl + gen.normal(size=len(GRID)) * 1e-3, np.where(bowl < 5, 0.0, bowl)]
    for nll in cases:
        fit.nll, fit.fitted = nll, None
        got = kernels.fitted_temperature(nll, GRID, compiled_step._LOG_GRID, compiled_step.LOG_STEP)
        assert got == fit.temperature(0.1)
    nan = np.zeros(len(GRID))
    nan[3] = np.nan
    assert kernels.fitted_temperature(nan, GRID, compiled_step._LOG_GRID, 1.0) == -1.0


FUSED_CONFIGS = [
    {"hidden": (16, 16), "memory": 40},
    {"hidden": (24, 16, 8), "report": "confident", "memory": 30, "replay_every": 3},
    {"hidden": (20, 20), "report": "early_exit", "readout": False, "calibrate": False},
    {"hidden": (16,), "standardise": False, "adapt": False, "memory": 0},
    {"hidden": (12, 12), "fourier": 8, "hidden_decay": None},
]


@needs_numba
@pytest.mark.parametrize("params", FUSED_CONFIGS)
def test_the_fused_one_sample_tail_equals_the_step_before_it(
    monkeypatch: pytest.MonkeyPatch, params: dict[str, Any]
) -> None:
    """Readout, prediction and temperature fits in two compiled calls (compiled.FUSED) give the
    unfused compiled step's numbers bit for bit: every Prediction (labels and confidences) and
    the whole state, through classes arriving midstream, dict features that grow, a missing
    feature, a drift's boost, replays and samples learned without a prediction."""
    gen = np.random.default_rng(11)
    rows, labels = [], []
    for i in range(500):
        n_classes = 2 + (i >= 100) + (i >= 250)
        label = int(gen.integers(0, n_classes))
        x = gen.normal(size=6) + np.eye(6)[label] * 2
        row = {f"f{j}": float(v) for j, v in enumerate(x) if j < 4 + (i >= 200) + (i >= 300)}
        if i % 23 == 7:
            del row["f1"]
        rows.append(row)
        labels.append(label)

    def run(fused: bool) -> tuple[list[Any], dict[str, Any]]:
        monkeypatch.setattr(compiled_step, "FUSED", fused)
        model = SpelaMLP(**params, seed=5)
        assert model.uses_compiled
        preds = []
        for i, (row, label) in enumerate(zip(rows, labels, strict=True)):
            if i == 350 and model.detector is not None:
                model.detector.changed_at = model.n_learned
            preds.append(model.predict_learn_one(row, label, predict=i % 9 != 4))
        return preds, model.state_dict()

    ref_preds, ref = run(False)
    fused_preds, fused = run(True)
    assert fused_preds == ref_preds
    assert sum(p is not None and p.label is not None for p in ref_preds) > 400
    assert fused.keys() == ref.keys()
    for key in ref:
        a, b = np.asarray(fused[key]), np.asarray(ref[key])
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), key


@needs_numba
def test_the_temperature_sums_equal_the_loop_that_divides_every_score_twice() -> None:
    """kernels.calibration_update divides each score by each temperature once and takes the
    top as max(s) / t: the same floats, bit for bit, as the loop it replaced (compiled here),
    for float32 and float64 scores, ties, one class and a NaN score."""
    import math

    from numba import njit

    from spela_stream import kernels
    from spela_stream.calibration import GRID

    @njit(cache=False, fastmath=False)
    def before(s: np.ndarray, k: int, grid: np.ndarray, nll: np.ndarray, decay: float) -> None:
        n = s.shape[0]
        for g in range(grid.shape[0]):
            t = grid[g]
            top = float(s[0]) / t
            for j in range(1, n):
                top = max(top, float(s[j]) / t)
            acc = 0.0
            for j in range(n):
                acc += math.exp(float(s[j]) / t - top)
            nll[g] = nll[g] * decay + ((math.log(acc) + top) - float(s[k]) / t)

    gen = np.random.default_rng(3)
    ref, got = np.zeros(len(GRID)), np.zeros(len(GRID))
    for i in range(400):
        n_classes = 1 + i % 11
        s = gen.uniform(-1, 1, n_classes).astype(np.float32 if i % 2 else np.float64)
        if i % 7 == 3:
            s[:] = s[0]  # all tied
        k = int(gen.integers(n_classes))
        before(s, k, GRID, ref, 0.999)
        kernels.calibration_update(s, k, GRID, got, 0.999)
        assert np.array_equal(got, ref), i
    s = np.array([0.1, np.nan, 0.3])
    before(s, 0, GRID, ref, 0.999)
    kernels.calibration_update(s, 0, GRID, got, 0.999)
    assert np.isnan(got).all() and np.isnan(ref).all()


@needs_numba
def test_the_fused_plan_is_made_again_when_the_model_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The per-sample decision to take the fused step (``_fused_buffers``) is kept while the
    layers and the options it rests on stay, and made again when they change: an option set
    on the model, compiled.FUSED, a grown dict input (new buffers of the new width)."""
    gen = np.random.default_rng(3)
    model = SpelaMLP(hidden=(8, 8), seed=1)
    for i in range(60):
        row = {f"f{j}": float(v) for j, v in enumerate(gen.normal(size=3))}
        model.predict_learn_one(row, i % 3)
    buffers = model._fused_buffers()
    assert buffers is not None and buffers.x.shape == (3,)
    assert model._fused_buffers() is buffers  # kept
    model.report = "vote"
    assert model._fused_buffers() is None
    model.report = "last"
    assert model._fused_buffers() is buffers
    model.compiled = False
    assert model._fused_buffers() is None
    model.compiled = None
    monkeypatch.setattr(compiled_step, "FUSED", False)
    assert model._fused_buffers() is None
    monkeypatch.setattr(compiled_step, "FUSED", True)
    model.predict_learn_one({"f0": 1.0, "f1": 0.0, "f2": 2.0, "f3": -1.0}, 1)  # a new feature
    grown = model._fused_buffers()
    assert grown is not None and grown is not buffers and grown.x.shape == (4,)
    assert grown.shapes[0] == (4, 8)


@needs_numba
def test_a_loaded_model_and_an_option_changed_midstream_give_the_unfused_numbers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A model restored from its state continues bit for bit as the one it came from, and an
    option changed midstream (report) is followed, with the fused step's decision kept per
    model: the same Predictions and state as the unfused step (compiled.FUSED=False)."""
    gen = np.random.default_rng(8)
    xs = gen.normal(size=(600, 5))
    ys = [int(v) for v in gen.integers(0, 3, 600)]
    ys[300:] = [3 if i % 4 == 0 else y for i, y in enumerate(ys[300:])]  # a class arrives

    def run(fused: bool) -> tuple[list[Any], list[Any], dict[str, Any]]:
        monkeypatch.setattr(compiled_step, "FUSED", fused)
        model = SpelaMLP(hidden=(12, 12), memory=50, seed=2)
        preds = [model.predict_learn_one(x, y) for x, y in zip(xs[:250], ys[:250], strict=True)]
        loaded = SpelaMLP.from_state(model.state_dict())
        assert (loaded._fused_buffers() is not None) == fused
        pairs = []
        for i, (x, y) in enumerate(zip(xs[250:], ys[250:], strict=True)):
            if i == 200:
                model.report = loaded.report = "confident"
            pairs.append((model.predict_learn_one(x, y), loaded.predict_learn_one(x, y)))
        a, b = model.state_dict(), loaded.state_dict()
        for key in a:
            u, v = np.asarray(a[key]), np.asarray(b[key])
            assert np.array_equal(u, v, equal_nan=u.dtype.kind == "f"), key
        return preds, pairs, a

    ref_preds, ref_pairs, ref = run(False)
    preds, pairs, state = run(True)
    assert all(p == q for p, q in pairs) and all(p == q for p, q in ref_pairs)
    assert preds == ref_preds and pairs == ref_pairs
    assert any(p.layer == 0 for p, _ in pairs[200:])  # "confident" chose a first layer
    for key in ref:
        a, b = np.asarray(state[key]), np.asarray(ref[key])
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), key


@needs_numba
def test_the_compiled_step_runs_torch_only_on_the_models_threads() -> None:
    """predict_learn_one's compiled step leaves torch's thread count alone (it calls no torch
    operation); what it does through torch (a replay of several samples, a new class) runs
    on the model's ``threads``, the caller's count restored."""
    outer = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        gen = np.random.default_rng(4)
        model = SpelaMLP(hidden=(8, 8), memory=100, threads=1, seed=3)
        assert model.uses_compiled
        for i in range(300):  # three classes, then one alone: its shortfall replays many
            y = i % 3 if i < 150 else 0
            model.predict_learn_one(gen.normal(size=4) + y, y)
        seen: list[int] = []
        layer = model.layers[0]
        forward = layer.forward

        def spy(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            seen.append(torch.get_num_threads())
            return forward(x)

        layer.forward = spy  # type: ignore[method-assign]
        try:
            for _ in range(100):
                model.predict_learn_one(gen.normal(size=4), 0)
                assert torch.get_num_threads() == 2
        finally:
            del layer.forward
        assert seen and set(seen) == {1}
    finally:
        torch.set_num_threads(outer)
