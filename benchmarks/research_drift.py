"""Research rows for the drift goals of issue 11 (round 7): fit on low-dimensional tabular streams.

One row: one VARIANT of ``SpelaMLP`` (defaults otherwise) on one PART: ``rbf``/``agrawal``/
``recurring`` (``drift_streams(N, 0.8 N, N / 10)``, through ``continual_drift.run_drift``, as
``python -m benchmarks.continual --streams ... --drift-n N`` runs them), ``elec2``/``mnist``/...
(i.i.d.: prequential accuracy on the shared stream in its order, ``benchmarks.continual.iid``)
or ``mnist-2``/... (class-incremental, final held-out, ``benchmarks.continual.evaluate``). Each
drift row also keeps every layer's own prequential accuracy (``Prediction.layer_labels``), so
which layer fits best is read off the same run.

Variants (``VARIANTS``): model parameters; ``ce*`` patch a contrastive local loss into
``SpelaLayer.update`` (torch path, ``compiled=False``): ``T * CE`` of ``softmax(cos / T)`` over
the known classes' vectors, gradient ``sum_j (p_j - [j = k]) (v_j - c_j y_hat) / |y|``: it pulls
towards the label's vector, pushes from the others' in proportion to their probability, and
vanishes on a sample already right by a margin (the paper's ``log(2 - cos)`` keeps pulling).
``c*`` are the same loss as the library's option ``SpelaMLP(contrast=T)`` (compiled path).

    OPENBLAS_NUM_THREADS=1 nice -n 10 python -m benchmarks.research_drift rbf base
    (part, variant[, drift-n]; appends a JSON row to results/drift-research-rows.jsonl)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spela_stream import layer as layer_mod
from spela_stream.rule import leaky_relu_backward

ROWS = Path(__file__).resolve().parent / "results" / "drift-research-rows.jsonl"
DRIFT = ("rbf", "agrawal", "recurring", "sea-abrupt")

# name -> (SpelaMLP parameters, contrastive temperature or None)
VARIANTS: dict[str, tuple[dict[str, Any], float | None]] = {
    "base": ({}, None),
    "torch": ({"compiled": False}, None),  # the patched path's reference (same rule)
    "w1024x2": ({"hidden": [1024, 1024]}, None),
    "w256x2": ({"hidden": [256, 256]}, None),
    "w2048x1": ({"hidden": [2048]}, None),
    "w512x1": ({"hidden": [512]}, None),
    "w512x3": ({"hidden": [512, 512, 512]}, None),
    "w512x4": ({"hidden": [512, 512, 512, 512]}, None),
    "w256x3": ({"hidden": [256, 256, 256]}, None),
    "w256x4": ({"hidden": [256, 256, 256, 256]}, None),
    "w256x6": ({"hidden": [256] * 6}, None),
    "vote": ({"report": "vote"}, None),
    "confident": ({"report": "confident"}, None),
    "noreadout": ({"readout": False}, None),
    "ce0.1": ({"compiled": False}, 0.1),
    "ce0.3": ({"compiled": False}, 0.3),
    "ce0.03": ({"compiled": False}, 0.03),
    "ce0.1-w512x3": ({"compiled": False, "hidden": [512, 512, 512]}, 0.1),
    "ce0.1-w256x3": ({"compiled": False, "hidden": [256, 256, 256]}, 0.1),
    # the library's option (SpelaMLP(contrast=T), compiled path): the same loss as ce*
    "c0.1": ({"contrast": 0.1}, None),
    "c0.3": ({"contrast": 0.3}, None),
    "c0.05": ({"contrast": 0.05}, None),
    "c0.1-w256x3": ({"contrast": 0.1, "hidden": [256, 256, 256]}, None),
    "c0.1-w512x3": ({"contrast": 0.1, "hidden": [512, 512, 512]}, None),
    "c0.1-lr5": ({"contrast": 0.1, "lr": 5.0}, None),
    "c0.1-lr20": ({"contrast": 0.1, "lr": 20.0}, None),
    "ce0.1-lr20": ({"compiled": False, "lr": 20.0}, 0.1),
    "ce0.1-lr5": ({"compiled": False, "lr": 5.0}, 0.1),
}

# rows measured before contrast=0.1 became the default: the paper's loss unless a variant names one
# (and before replay_gate=5 did: every class below its long-run share rehearsed)
for _params, _ in VARIANTS.values():
    _params.setdefault("contrast", 0.0)
    _params.setdefault("replay_gate", 0.0)

# round 9 (issue 11, gone11): the replay memory's rehearsal gate. Every row but "gate5"
# (today's default) sets SpelaMLP(replay_gate=...) itself, so the rows measured before
# replay_gate=5 became the default repeat: "defaults" is main's before round 9 (no gate);
# the dict replaces ReplayMemory.shortfall by the round's other rules (``gate_rule``:
# RECENT_SCALE: rehearse max(0, p - r / alpha); GONE_BELOW: only where r < f p; GONE_FULL: a gone
# class's whole p), which the library does not carry.
# name -> (SpelaMLP parameters, spela_stream.memory constants)
GATES: dict[str, tuple[dict[str, Any], dict[str, float]]] = {
    "defaults": ({"replay_gate": 0.0}, {}),
    "gate5": ({}, {}),
    "mem0": ({"memory": 0}, {}),
    "alpha0.5": ({"replay_gate": 0.0}, {"RECENT_SCALE": 0.5}),
    "alpha0.25": ({"replay_gate": 0.0}, {"RECENT_SCALE": 0.25}),
    "alpha0.1": ({"replay_gate": 0.0}, {"RECENT_SCALE": 0.1}),
    "gate0.5": ({"replay_gate": 0.0}, {"GONE_BELOW": 0.5}),
    "gate0.25": ({"replay_gate": 0.0}, {"GONE_BELOW": 0.25}),
    "gate0.1": ({"replay_gate": 0.0}, {"GONE_BELOW": 0.1}),
    "gap3": ({"replay_gate": 3.0}, {}),
    "gap5": ({"replay_gate": 5.0}, {}),
    "gap10": ({"replay_gate": 10.0}, {}),
    "gap20": ({"replay_gate": 20.0}, {}),
    "gap5full": ({"replay_gate": 5.0}, {"GONE_FULL": True}),
    "gap10full": ({"replay_gate": 10.0}, {"GONE_FULL": True}),
}
for _seed in (1, 2):  # other model seeds: the class-incremental figures' spread
    GATES[f"defaults-s{_seed}"] = ({"replay_gate": 0.0, "seed": _seed}, {})
    GATES[f"gate5-s{_seed}"] = ({"seed": _seed}, {})
for _name, (_params, _) in GATES.items():
    VARIANTS[_name] = (_params, None)

# round 10 (detect11): the defaults with drift-module constants patched (``PATCHES``) and, for
# the ``prop*``/``sd*``/``adwin*`` rows, the detector's pause or test replaced (``DETECTORS``)
PATCHES: dict[str, dict[str, float]] = {
    "d-base": {},
    "q0": {"QUIET": 0},
    "q250": {"QUIET": 250},
    "q500": {"QUIET": 500},
    "q1000": {"QUIET": 1000},
    "l25": {"PH_THRESHOLD": 25.0},
    "l35": {"PH_THRESHOLD": 35.0},
    "l25-q500": {"PH_THRESHOLD": 25.0, "QUIET": 500},
    "b5": {"BOOST": 5.0},
    "b5-span2000": {"BOOST": 5.0, "BOOST_SPAN": 2000},
    "keep0": {"SCALER_KEEP": 0},
    "keep100": {"SCALER_KEEP": 100},
    "q0-l25": {"QUIET": 0, "PH_THRESHOLD": 25.0},
    "q0-l35": {"QUIET": 0, "PH_THRESHOLD": 35.0},
    "q0-b5": {"QUIET": 0, "BOOST": 5.0},
    "q0-b2": {"QUIET": 0, "BOOST": 2.0},
    "q0-span2000": {"QUIET": 0, "BOOST_SPAN": 2000},
    "q0-span500": {"QUIET": 0, "BOOST_SPAN": 500},
    "q0-keep0": {"QUIET": 0, "SCALER_KEEP": 0},
    "q0-keep50": {"QUIET": 0, "SCALER_KEEP": 50},
    "q0-span3000": {"QUIET": 0, "BOOST_SPAN": 3000},
    "q0-span4000": {"QUIET": 0, "BOOST_SPAN": 4000},
    "q0-b5-span2000": {"QUIET": 0, "BOOST": 5.0, "BOOST_SPAN": 2000},
    "q0-b2-span3000": {"QUIET": 0, "BOOST": 2.0, "BOOST_SPAN": 3000},
    "span2000-q500": {"QUIET": 500, "BOOST_SPAN": 2000},
    "span2000": {"BOOST_SPAN": 2000},
}


def _scaled_ph(lam_sd: float, delta_sd: float, floor: float = 0.01) -> None:
    """Page-Hinkley in units of the error's standard deviation sqrt(p (1 - p)) (p: the mean since
    the reset, at least ``floor``): lambda and delta grow with the error's spread."""
    from spela_stream import drift

    def update(self: Any, error: float) -> bool:
        self.n += 1
        self.mean += (error - self.mean) / self.n
        sd = max(self.mean * (1.0 - self.mean), floor * (1.0 - floor)) ** 0.5
        self.cum += error - self.mean - delta_sd * sd
        self.cum_min = min(self.cum_min, self.cum)
        if self.n >= drift.PH_MIN and self.cum - self.cum_min > lam_sd * sd:
            self.reset()
            self.detections += 1
            return True
        return False

    drift.DriftDetector.update = update  # type: ignore[method-assign]


def _adwin(delta: float) -> None:
    """River's ADWIN on the error stream; a change counts only when the error rose (the window's
    mean after the cut above the one before)."""
    from river.drift import ADWIN

    from spela_stream import drift

    def update(self: Any, error: float) -> bool:
        if not hasattr(self, "_adwin"):
            self._adwin = ADWIN(delta=delta)
        before = self._adwin.estimation
        self._adwin.update(error)
        self.n += 1
        if self._adwin.drift_detected and self._adwin.estimation > before:
            self.detections += 1
            return True
        return False

    drift.DriftDetector.update = update  # type: ignore[method-assign]


def _proportional(frac: float) -> None:
    """The pause after a new class: ``frac`` of the samples learned so far (at most QUIET)."""
    from spela_stream import drift

    def new_class(self: Any, n_learned: int) -> None:
        self.quiet_until = n_learned + min(drift.QUIET, int(frac * n_learned))
        self.reset()

    drift.DriftDetector.new_class = new_class  # type: ignore[method-assign]


DETECTORS: dict[str, dict[str, Any]] = {
    "sd125": {"install": lambda: _scaled_ph(125.0, 0.025)},  # today's at p = 0.2
    "sd60": {"install": lambda: _scaled_ph(60.0, 0.025)},
    "sd90": {"install": lambda: _scaled_ph(90.0, 0.025)},
    "sd60-d0": {"install": lambda: _scaled_ph(60.0, 0.0)},
    "sd45": {"install": lambda: _scaled_ph(45.0, 0.025)},
    "sd75": {"install": lambda: _scaled_ph(75.0, 0.025)},
    "adwin0.002": {"install": lambda: _adwin(0.002)},
    "adwin0.0002": {"install": lambda: _adwin(0.0002)},
    "prop0.5": {"install": lambda: _proportional(0.5)},
    "prop0.25": {"install": lambda: _proportional(0.25)},
}
for _name in DETECTORS:
    _quiet = {} if _name.startswith("prop") else {"QUIET": 0}  # prop*: the pause, shortened
    PATCHES.setdefault(_name, {"BOOST_SPAN": 3000} | _quiet)
# every patch on top of the defaults before round 10 (d-base); "new": the library's as it is
_BEFORE = {"QUIET": 2000, "BOOST_SPAN": 1000}
PATCHES = {name: _BEFORE | patch for name, patch in PATCHES.items()}
PATCHES["new"] = {}
for _name in PATCHES:  # the library's other defaults: rows run after round 9 merged have its gate
    VARIANTS[_name] = ({}, None)

_ORIGINAL_UPDATE = layer_mod.SpelaLayer.update
_ORIGINAL_ENSURE = layer_mod.SpelaLayer.ensure_classes


def contrastive(temperature: float) -> None:
    """Patch SpelaLayer so its local loss is T * CE over the known classes (see the docstring)."""

    def ensure_classes(self: Any, n: int) -> None:
        _ORIGINAL_ENSURE(self, n)
        self.n_known = n

    def update(
        self: Any, x: torch.Tensor, z: torch.Tensor, y: torch.Tensor, k: torch.Tensor, lr: float
    ) -> None:
        n_known = max(int(getattr(self, "n_known", 1)), int(k.max()) + 1)
        v = self.vectors[:n_known]  # (C, d)
        n = y.norm(dim=1, keepdim=True).clamp_min(1e-12)  # (B, 1)
        y_hat = y / n
        cos = y_hat @ v.T  # (B, C)
        p = torch.softmax(cos / temperature, dim=1)
        p[torch.arange(len(k)), k] -= 1.0  # p - onehot
        # sum_j (p_j - [j=k]) (v_j - c_j y_hat) / n
        g_y = (p @ v - (p * cos).sum(dim=1, keepdim=True) * y_hat) / n
        g_z = leaky_relu_backward(g_y, z)
        step = lr / x.shape[0]
        self.weight.addmm_(g_z.T, x, alpha=-step)
        self.bias.add_(g_z.sum(dim=0), alpha=-step)

    layer_mod.SpelaLayer.update = update  # type: ignore[method-assign]
    layer_mod.SpelaLayer.ensure_classes = ensure_classes  # type: ignore[method-assign]


class LayerSpela:
    """``benchmarks.continual_learners.Spela`` that also counts every layer's own hits."""

    def __init__(self, **params: Any) -> None:
        from spela_stream.model import SpelaMLP

        self.model = SpelaMLP(**params)
        self.layer_hits: list[int] = []

    def predict_learn(self, x: np.ndarray, y: int) -> int | None:
        p = self.model.predict_learn_one(x, y)
        assert p is not None
        if len(self.layer_hits) < len(p.layer_labels):
            self.layer_hits += [0] * (len(p.layer_labels) - len(self.layer_hits))
        for i, lab in enumerate(p.layer_labels):
            self.layer_hits[i] += lab == y
        return p.label  # type: ignore[return-value]

    def predict(self, X: np.ndarray) -> list[int | None]:
        return self.model.predict_many(X)  # type: ignore[return-value]

    def memory_samples(self) -> int:
        mem = self.model.replay_memory
        return 0 if mem is None else len(mem)


def watch_detections(name: str) -> list[int] | None:
    """Apply the variant's drift patches; the sample counts at which the detector fires (filled
    while the row runs; None for the older variants, whose rows did not record them)."""
    from spela_stream import drift
    from spela_stream.model import SpelaMLP

    if name not in PATCHES:
        return None
    for attr, value in PATCHES[name].items():
        assert hasattr(drift, attr), attr
        setattr(drift, attr, value)
    if name in DETECTORS:
        DETECTORS[name]["install"]()
    fired: list[int] = []
    original = SpelaMLP._drifted

    def drifted(self: Any) -> None:
        fired.append(self.n_learned)
        original(self)

    SpelaMLP._drifted = drifted  # type: ignore[method-assign]
    return fired


def gate_rule(RECENT_SCALE: float = 1.0, GONE_BELOW: float = 0.0, GONE_FULL: bool = False) -> None:
    """Round 9's rejected rehearsal gates: ``ReplayMemory.shortfall`` replaced (see GATES)."""
    from spela_stream.memory import ReplayMemory

    def shortfall(self: Any, gaps: float = 0.0) -> np.ndarray:
        if self.recent_weight == 0.0:
            return np.zeros(len(self.seen))
        total = self.seen.sum()
        p = self.seen / total
        r = self.recent / self.recent_weight
        if GONE_BELOW > 0.0:
            out: np.ndarray = np.where(r < GONE_BELOW * p, p - r, 0.0)
        else:
            out = np.maximum(p - r / RECENT_SCALE, 0.0)
        if gaps > 0.0:
            gone = (total - self.last) * self.seen > gaps * total
            out = np.where(gone, p if GONE_FULL else out, 0.0)
        return out

    ReplayMemory.shortfall = shortfall  # type: ignore[method-assign]


def main(argv: list[str]) -> None:
    part, name = argv[0], argv[1]
    seed = None
    if "@" in name:  # VARIANT@SEED: the variant with SpelaMLP(seed=SEED)
        name, seed_text = name.split("@")
        seed = int(seed_text)
    drift_n = int(argv[2]) if len(argv) > 2 else 10_000
    torch.set_num_threads(1)
    params, temperature = VARIANTS[name]
    if seed is not None:
        params = {**params, "seed": seed}
    if name in GATES:
        row_gate = GATES[name][1]
        if row_gate:
            gate_rule(**row_gate)
    else:
        row_gate = {}
    if temperature is not None:
        contrastive(temperature)
    row: dict[str, Any] = {"part": part, "variant": name, "params": params}
    if row_gate:
        row["memory_constants"] = row_gate
    fired = watch_detections(name)
    if name in PATCHES:
        row["patch"] = PATCHES[name]
    if part in DRIFT:
        from benchmarks.continual_data import drift_streams, materialise
        from benchmarks.continual_drift import run_drift

        stream = drift_streams(drift_n, int(drift_n * 0.8), drift_n // 10)[part]
        X, y = materialise(stream)
        learner = LayerSpela(**params)
        r = run_drift(learner, stream, X, y)
        keys = ("prequential", "pre_drift", "post_drift", "dip", "recovery", "seconds")
        row |= {k: r[k] for k in keys if k in r} | {"drift_n": drift_n}
        row["layers"] = [round(h / len(y), 4) for h in learner.layer_hits]
        row["hidden"] = list(learner.model.hidden)
    else:
        from benchmarks.continual import CI_STAGES, evaluate, iid

        if part in CI_STAGES:
            from benchmarks.continual_data import load_class_incremental
            from benchmarks.continual_learners import Spela

            X, y = load_class_incremental(part.split("-")[0])
            r = evaluate(Spela(**params), X, y, CI_STAGES[part])
            row |= {k: r[k] for k in ("prequential", "final_heldout", "to80_median", "seconds")}
        else:
            r = iid(part, params)
            row |= {"accuracy": r["accuracy"], "seconds": r["seconds"]}
    row["seconds"] = round(row["seconds"])
    if fired is not None:
        row["fired"] = fired
    print(json.dumps(row), flush=True)
    with ROWS.open("a") as fh:
        fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
