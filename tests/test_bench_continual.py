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


def test_median_recovery_counts_never_as_slower_than_any_number() -> None:
    med, rng = continual_drift.median_recovery, continual_drift.recovery_range
    assert med([871, 535, 548]) == 548 and rng([871, 535, 548]) == [535, 871]
    assert med([3735, None, 1575]) == 3735  # never is the slowest: 1,575 < 3,735 < never
    assert rng([3735, None, 1575]) == [1575, None]
    assert med([None, 4409, None]) is None and rng([None, 4409, None]) == [4409, None]
    assert med([None, None, None]) is None and rng([None, None, None]) == [None, None]
    assert med([500, 600]) == 550 and med([500, 601]) == 550.5  # even: the two middle averaged
    assert med([500, None]) is None  # (500 + never) / 2 is never
    assert med([700]) == 700 and med([None]) is None
    with pytest.raises(ValueError, match="no values"):
        med([])


def _run(preq: float, rec: int | None, curve: list[float], cpu: float) -> dict[str, object]:
    return {"prequential": preq, "pre_drift": preq + 0.01, "post_drift": preq - 0.01,
            "dip": 0.1 + preq, "recovery": rec, "n": 1000, "title": "hand-made",
            "memory_samples": 5, "seconds": cpu, "cpu_seconds": cpu,
            "curve": {"samples": [250, 500], "rolling": curve}}  # fmt: skip


def test_over_seeds_gives_each_seed_and_the_median_with_its_range() -> None:
    by_seed = {  # given out of order: the row lists them by seed
        2: _run(0.90, None, [0.5, 0.9], 3.0),
        0: _run(0.80, 871, [0.7, 0.8], 1.0),
        1: _run(0.85, 535, [0.6, 1.0], 2.0),
    }
    r = continual_drift.over_seeds(by_seed)
    assert r["seeds"] == [0, 1, 2] and [s["seed"] for s in r["per_seed"]] == [0, 1, 2]
    assert [s["recovery"] for s in r["per_seed"]] == [871, 535, None]
    assert [s["prequential"] for s in r["per_seed"]] == [0.80, 0.85, 0.90]
    assert "curve" not in r["per_seed"][0] and "title" not in r["per_seed"][0]
    assert r["prequential"] == 0.85 and r["prequential_range"] == [0.80, 0.90]
    assert r["pre_drift"] == pytest.approx(0.86) and r["dip"] == pytest.approx(0.95)
    assert r["recovery"] == 871 and r["recovery_range"] == [535, None] and r["recovered"] == 2
    assert r["curve"] == {"samples": [250, 500], "rolling": [0.6, 0.9]}  # median at each point
    assert r["cpu_seconds"] == 6.0 and r["n"] == 1000 and r["title"] == "hand-made"
    text = continual_report.recovery_text
    assert text(r) == "871 (535-never; 2/3 recovered)"
    assert continual_report._value(r, "prequential") == "0.850 (0.800-0.900)"
    assert text(continual_drift.over_seeds({0: by_seed[0], 1: by_seed[1]})) == "703 (535-871)"
    never = {s: _run(0.5, None, [0.5, 0.5], 1.0) for s in (0, 1, 2)}
    assert text(continual_drift.over_seeds(never)) == "never (0/3 recovered)"
    one = continual_drift.over_seeds({4: by_seed[0]})  # --seeds 4: shown as a single run
    assert text(one) == "871" and continual_report._value(one, "prequential") == "0.800"
    assert text({"recovery": 1584}) == "1,584"  # a row from before --seeds


def test_over_seeds_takes_the_median_of_recurring_blocks_and_concepts() -> None:
    def rec(blocks: list[float], first: float) -> dict[str, object]:
        c = {"first": first, "returns": 0.8, "first_early": 0.5, "returns_early": 0.7}
        return {"prequential": float(np.mean(blocks)), "blocks": blocks, "concept0": c,
                "n": 4, "memory_samples": 0, "seconds": 1.0, "cpu_seconds": 1.0,
                "curve": {"samples": [2], "rolling": [0.5]}}  # fmt: skip

    r = continual_drift.over_seeds({0: rec([0.1, 0.9], 0.6), 1: rec([0.3, 0.5], 0.7),
                                    2: rec([0.2, 0.7], 0.2)})  # fmt: skip
    assert r["blocks"] == pytest.approx([0.2, 0.7])
    assert r["concept0"]["first"] == pytest.approx(0.6) and "recovery" not in r


def test_parse_seeds() -> None:
    assert continual.parse_seeds("0,1,2") == (0, 1, 2) and continual.parse_seeds("5") == (5,)
    for bad in ("", "0,0", "a,1", "-1"):
        with pytest.raises(SystemExit, match="--seeds: .* e.g. --seeds 0,1,2"):
            continual.parse_seeds(bad)


def test_a_drift_run_over_two_seeds_keeps_each_seed_and_their_median(tmp_path: Path) -> None:
    from benchmarks.continual_learners import make

    results = continual.run_benchmark(
        ["sea-abrupt"], ["spela", "no-change"], 1, 2000, None, tmp_path, seeds=(0, 1)
    )
    on_disk = json.loads((tmp_path / "continual.json").read_text())
    assert on_disk == results
    row = on_disk["parts"]["sea-abrupt"]["rows"]["spela"]
    assert row["seeds"] == [0, 1] and [s["seed"] for s in row["per_seed"]] == [0, 1]
    # each seed's figures are those of SpelaMLP(seed=s) on the same stream, run here
    stream = continual_data.drift_streams(2000, 1600, 200)["sea-abrupt"]
    X, y = continual_data.materialise(stream)
    for s, got in zip((0, 1), row["per_seed"], strict=True):
        want = continual_drift.run_drift(make("spela", 3, 2, seed=s), stream, X, y)
        assert (got["prequential"], got["recovery"]) == (want["prequential"], want["recovery"])
    preqs = [s["prequential"] for s in row["per_seed"]]
    assert preqs[0] != preqs[1]  # the model seed reaches the learner
    assert row["prequential"] == pytest.approx(np.mean(preqs))  # two seeds: their mean
    assert row["prequential_range"] == [min(preqs), max(preqs)]
    assert row["recovery"] == continual_drift.median_recovery(
        [s["recovery"] for s in row["per_seed"]]
    )
    fixed = on_disk["parts"]["sea-abrupt"]["rows"]["no-change"]  # deterministic: one run
    assert fixed["seeds"] is None and "per_seed" not in fixed
    logged = [json.loads(line) for line in (tmp_path / "continual-rows.jsonl").open()]
    assert sorted((r["learner"], str(r["seed"])) for r in logged) == [
        ("no-change", "None"), ("spela", "0"), ("spela", "1")
    ]  # fmt: skip
    md = continual_report.publish(results, tmp_path, readme=False)
    assert "median over model seeds 0, 1" in md and "One run of no-change" in md
    assert "### Each model seed" in md and f"seeds 0, 1: {preqs[0]:.3f} / {preqs[1]:.3f}" in md
    block = continual_report.render_readme_block(results, [])
    assert f"| spela-stream defaults | {continual_report._value(row, 'prequential')}; " in block
