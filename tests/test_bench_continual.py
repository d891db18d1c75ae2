"""The continual benchmark: its forgetting, BWT, recovery and recurring figures on hand-computed
cases, the drift streams' concepts, the feature cache, and the generated outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import continual, continual_data, continual_drift, continual_report


class Remembers:
    """Knows the label of a row (its feature 0) once it has seen it, but keeps only ``keep``
    and the classes of the last ``window`` samples: a learner that forgets on a schedule."""

    def __init__(self, window: int, keep: frozenset[int] = frozenset()) -> None:
        self.window, self.keep = window, keep
        self.recent: list[int] = []

    def _known(self) -> set[int]:
        return set(self.recent[-self.window :]) | (self.keep & set(self.recent))

    def predict_learn(self, x: np.ndarray, y: int) -> int | None:
        pred = int(x[0]) if int(x[0]) in self._known() else None
        self.recent.append(y)
        return pred

    def predict(self, X: np.ndarray) -> list[int | None]:
        known = self._known()
        return [int(r[0]) if int(r[0]) in known else None for r in X]

    def memory_samples(self) -> int:
        return 0


def _blocks(n_classes: int, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    y = np.repeat(np.arange(n_classes), per_class)
    return y[:, None].astype(np.float32), y


def test_forgetting_bwt_and_final_accuracy_equal_a_hand_computed_case() -> None:
    # 6 classes, 3 stages of 2, 50 rows per class: 40 learned, 10 held out. The learner keeps
    # class 0 for ever and otherwise only the last 80 samples' classes (the current stage's).
    X, y = _blocks(6, 50)
    r = continual.evaluate(Remembers(80, frozenset({0})), X, y, per_stage=2)
    # stage matrix: after stage 1 classes 0, 1 right; after 2: 0, 2, 3; after 3: 0, 4, 5
    assert r["stage_matrix"] == [
        [1, 1, 0, 0, 0, 0],
        [1, 0, 1, 1, 0, 0],
        [1, 0, 0, 0, 1, 1],
    ]
    # forgetting: stage 1 (classes 0, 1): 1.0 -> 0.5; stage 2 (2, 3): 1.0 -> 0.0
    assert r["avg_forgetting"] == pytest.approx((0.5 + 1.0) / 2)
    assert r["bwt"] == pytest.approx(-0.75)
    assert r["final_heldout"] == pytest.approx(3 / 6)
    assert r["final_per_class"] == [1, 0, 0, 0, 1, 1]
    # each new class: its first sample is wrong, the next nine right -> 80% at its 10th sample
    assert (r["to80_median"], r["to80_max"], r["to80_never"]) == (10.0, 10, 0)
    assert r["prequential"] == pytest.approx((240 - 6) / 240)


def test_a_learner_that_never_forgets_has_zero_forgetting() -> None:
    X, y = _blocks(4, 20)
    r = continual.evaluate(Remembers(10**6), X, y, per_stage=1)
    assert r["avg_forgetting"] == 0.0 and r["final_heldout"] == 1.0


def test_rolling_accuracy_matches_a_naive_window() -> None:
    hits = (np.random.default_rng(0).random(700) < 0.7).astype(float)
    got = continual_drift.rolling(hits, 50)
    want = [hits[max(0, t - 49) : t + 1].mean() for t in range(700)]
    assert np.allclose(got, want)


def test_recovery_dip_and_levels_of_a_hand_made_drift() -> None:
    # 3,000 right, then 300 wrong, then right: a window of 500 wholly after the change may hold
    # at most 5 wrong to be within 1 point of 1.0, so it ends at sample 300 - 5 + 500 = 795.
    hits = np.concatenate([np.ones(3000), np.zeros(300), np.ones(2700)])
    f = continual_drift.drift_figures(hits, drift_at=3000)
    assert f["pre_drift"] == 1.0
    assert f["recovery"] == 795
    assert f["dip"] == pytest.approx(1 - 200 / 500)  # the worst window: 300 wrong of 500
    assert f["post_drift"] == pytest.approx(2700 / 3000)
    never = continual_drift.drift_figures(np.concatenate([np.ones(3000), np.zeros(3000)]), 3000)
    assert never["recovery"] is None
    unhurt = continual_drift.drift_figures(np.ones(6000), 3000)
    assert unhurt["recovery"] == continual_drift.W and unhurt["dip"] == 0.0


def test_a_gradual_change_is_measured_from_its_start() -> None:
    hits = np.concatenate([np.ones(2000), np.zeros(1000), np.ones(3000)])
    f = continual_drift.drift_figures(hits, drift_at=3000, width=2000)  # starts at 2000
    assert f["pre_drift"] == 1.0 and f["recovery"] == 1000 - 5 + 500


def test_recurring_figures_per_block_and_per_concept() -> None:
    means = [0.5, 0.6, 0.8, 0.9, 0.7, 1.0]
    block = 2000
    hits = np.concatenate([(np.arange(block) % 10 < 10 * m).astype(float) for m in means])
    hits[:400] = 0  # the first fifth of the first block all wrong: 200 of its 1,000 hits go
    f = continual_drift.recurring_figures(hits, block)
    assert f["blocks"] == pytest.approx([0.4, *means[1:]])
    assert f["concept0"]["first"] == pytest.approx(0.4)
    assert f["concept0"]["first_early"] == 0.0
    assert f["concept0"]["returns"] == pytest.approx((0.8 + 0.7) / 2)
    assert f["concept1"]["first"] == pytest.approx(0.6)
    assert f["concept1"]["returns"] == pytest.approx((0.9 + 1.0) / 2)
    assert f["concept1"]["returns_early"] == pytest.approx(0.95)


def test_sea_abrupt_changes_its_threshold_in_the_middle() -> None:
    stream = continual_data.drift_streams(n=4000)["sea-abrupt"]
    X, y = continual_data.materialise(stream)
    assert X.shape == (4000, 3) and stream.drift_at == 2000
    s = X[:, 0] + X[:, 1]
    # River's SEA: label = x0 + x1 > threshold; variant 0's threshold is 8, variant 3's 9.5
    assert np.array_equal(y[:2000], (s[:2000] > 8).astype(int))
    assert np.array_equal(y[2000:], (s[2000:] > 9.5).astype(int))
    assert np.mean(y[:2000] != (s[:2000] > 9.5)) > 0.05  # the change is visible


def test_the_recurring_stream_alternates_two_agrawal_functions() -> None:
    stream = continual_data.drift_streams(n=5000, recurring_n=4000, block=500)["recurring"]
    X, y = continual_data.materialise(stream)
    assert X.shape == (4000, 9) and stream.blocks == 500
    again = continual_data.materialise(stream)
    assert np.array_equal(again[0], X) and np.array_equal(again[1], y)  # seeded


def test_camera_features_are_cached_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    feats, y = continual_data.camera_features(4, cache=tmp_path)
    assert feats.shape == (4, 1280) and feats.dtype == np.float32 and len(y) == 4
    assert [p.name for p in tmp_path.iterdir()] == ["mnist-lite0-112px-4.npy"]

    def no_backbone(*args: object) -> np.ndarray:
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(continual_data, "embed_frames", no_backbone)
    again, _ = continual_data.camera_features(3, cache=tmp_path)  # a prefix of the cached rows
    assert np.array_equal(again, feats[:3])


def test_parts_and_groups() -> None:
    assert continual.parts("drift") == list(continual.DRIFT_PARTS)
    assert continual.parts("rbf,mnist-2") == ["mnist-2", "rbf"]
    with pytest.raises(SystemExit, match="unknown part 'mnist'"):
        continual.parts("mnist")


def test_run_merge_and_publish_the_outputs(tmp_path: Path) -> None:
    kept = {"learner": "spela", "commit": "abc1234", "prequential": 0.5, "final_heldout": 0.5,
            "final_per_class": [0.5], "avg_forgetting": 0.1, "bwt": -0.1, "to80_median": None,
            "to80_max": None, "to80_never": 0, "memory_samples": 0, "cpu_seconds": 1.0,
            "stage_matrix": [[0.5]]}  # fmt: skip
    continual_report.save_results(
        {"format": continual_report.FORMAT,
         "parts": {"mnist-1": {"kind": "class-incremental", "rows": {"spela": kept}}}},
        tmp_path / "continual.json",
    )  # fmt: skip
    results = continual.run_benchmark(
        ["mnist-2", "sea-abrupt", "recurring"], ["no-change", "slda"], 1, 3000, 400, tmp_path
    )
    on_disk = json.loads((tmp_path / "continual.json").read_text())
    assert on_disk == results
    assert on_disk["parts"]["mnist-1"]["rows"]["spela"] == kept  # a part not run is kept
    nc = on_disk["parts"]["mnist-2"]["rows"]["no-change"]
    assert sorted(nc["final_per_class"]) == [0.0] * 9 + [1.0]  # only the last class
    assert 0.0 < nc["final_heldout"] < 0.2
    assert on_disk["parts"]["sea-abrupt"]["rows"]["slda"]["prequential"] > 0.8
    assert len(on_disk["parts"]["recurring"]["rows"]["slda"]["blocks"]) == 8
    md = continual_report.publish(results, tmp_path, readme=False)
    assert (tmp_path / "continual.md").read_text() == md
    assert "`SpelaMLP` defaults of commit `abc1234`" in md
    assert "| SLDA (shrinkage 0.01) |" in md and "### Recurring concepts" in md
    for png in ("continual-stages.png", "continual-drift.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_readme_block_is_replaced_between_its_markers(tmp_path: Path) -> None:
    begin, end = continual_report.BEGIN, continual_report.END
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{begin}\nold\n{end}\nafter\n")
    block = continual_report.render_readme_block(
        {"format": continual_report.FORMAT, "parts": {}}, []
    )
    continual_report.write_readme(block, readme)
    assert readme.read_text() == f"before\n{block}\nafter\n"
    assert block.startswith(begin) and block.endswith(end) and "old" not in block
    bare = tmp_path / "bare.md"
    bare.write_text("no markers\n")
    with pytest.raises(SystemExit, match="has no <!-- continual:begin -->"):
        continual_report.write_readme(block, bare)
