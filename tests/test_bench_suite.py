"""The benchmark suite: its loop, scores, tables and the README block it generates.

The peers that CI would have to install (Vowpal Wabbit, CapyMOA, deep-river) are not needed here;
the suite itself exercises their adapters.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from river import metrics, utils

from benchmarks import suite
from benchmarks.learners import spec
from benchmarks.loop import scores

ROOT = Path(__file__).resolve().parents[1]


def test_scores_match_rivers_accuracy_kappa_and_rolling_accuracy() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 500)
    preds = np.where(rng.random(500) < 0.6, y, rng.integers(-1, 4, 500))  # -1: no prediction
    got = scores(y, preds, 4, window=50)
    acc, kappa = metrics.Accuracy(), metrics.CohenKappa()
    rolling = utils.Rolling(metrics.Accuracy, window_size=50)
    curve = {}
    for i, (t, p) in enumerate(zip(y.tolist(), preds.tolist(), strict=True), start=1):
        for m in (acc, kappa, rolling):
            m.update(t, p)
        curve[i] = rolling.get()
    assert got["accuracy"] == pytest.approx(acc.get())
    assert got["kappa"] == pytest.approx(kappa.get())
    assert got["final_rolling"] == pytest.approx(curve[500])
    for at, r in zip(got["curve"]["samples"], got["curve"]["rolling"], strict=True):
        assert r == pytest.approx(curve[at], abs=1e-4)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """The suite on the first 300 samples of the embedded stream with three core learners."""
    out = tmp_path_factory.mktemp("suite")
    report = suite.run_suite(
        mode="test",
        streams=["embedded"],
        learners=[spec("spela 2x1024"), spec("backprop 2x1024"), spec("River SoftmaxRegression")],
        limit=300,
        limits={},
        window=100,
        grid=(0.01, 0.03),
        install=False,
        outdir=out,
    )
    return report, out


def test_suite_writes_json_markdown_and_curve_with_sane_figures(
    tiny_run: tuple[dict[str, Any], Path],
) -> None:
    report, out = tiny_run
    saved = json.loads((out / "suite-test.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved["streams"]["embedded"] == {"n": 300, "d": 784, "classes": 10}
    results = saved["results"]
    assert len(results) == 4  # two backprop learning rates
    assert {r["status"] for r in results} == {"ok"}
    for r in results:
        assert r["n"] == 300
        assert 0.3 < r["accuracy"] <= 1.0  # every learner learns digits from 300 samples
        assert -1.0 <= r["kappa"] <= r["accuracy"]
        assert 0.0 <= r["final_rolling"] <= 1.0
        assert r["samples_per_s"] > 0 and r["seconds"] > 0
        assert r["peak_rss_mb"] >= r["rss_before_loop_mb"] > 0
        assert r["model_bytes"] > 0
        assert r["curve"]["samples"][-1] == 300
    shown = [r for r in results if r["shown"]]
    assert [r["learner"] for r in shown] == [
        "spela 2x1024",
        "backprop 2x1024",
        "River SoftmaxRegression",
    ]
    bp = [r for r in results if r["learner"] == "backprop 2x1024"]
    assert next(r for r in bp if r["shown"])["accuracy"] == max(r["accuracy"] for r in bp)
    spela = shown[0]
    assert spela["model_bytes"] > 4 * (784 * 1024 + 1024 * 1024)  # the float32 weights alone
    assert len(spela["layer_accuracy"]) == 2 and spela["layer_accuracy"][1] == spela["accuracy"]
    ee = spela["early_exit"]
    assert 0.0 <= ee["stopped_early"] <= 1.0 and 0.0 <= ee["accuracy"] <= 1.0
    assert ee["predict_us_full"] > 0 and ee["predict_us_early_exit"] > 0
    ck = spela["checkpoint"]
    assert 0 < ck["save_s_median"] <= ck["save_s_max"]
    assert 0 < ck["share_at_default_interval"] < 1 and ck["db_bytes_keep3"] > spela["model_bytes"]
    md = (out / "suite-test.md").read_text()
    for r in shown:
        assert f"| {r['learner']} | {r['accuracy']:.4f} | {r['kappa']:.4f} |" in md
    assert "accuracy >= torch backprop (same shape)" in md and "lr 0.0" in md
    png = out / "curve-embedded-test.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size < 250_000


def test_targets_compare_the_default_with_the_best_of_each_family(
    tiny_run: tuple[dict[str, Any], Path],
) -> None:
    report, _ = tiny_run
    by = {r["learner"]: r for r in report["results"] if r["shown"]}
    rows = {t["target"]: t for t in suite.targets(report)}
    bp = rows["accuracy >= torch backprop (same shape)"]
    assert bp["spela"] == by["spela 2x1024"]["accuracy"]
    assert bp["other"] == by["backprop 2x1024"]["accuracy"]
    assert bp["met"] == (bp["spela"] >= bp["other"])
    speed = rows["samples/s >= 1.5x torch backprop (same shape)"]
    assert (
        speed["ratio"]
        == by["spela 2x1024"]["samples_per_s"] / by["backprop 2x1024"]["samples_per_s"]
    )
    assert speed["met"] == (speed["ratio"] >= 1.5)
    river = rows["accuracy >= best River model"]
    assert river["who"] == "River SoftmaxRegression"
    overall = rows["accuracy >= best River model on at least 3 of 4 streams"]
    assert overall["other"] == 1 and overall["met"] == river["met"]


def test_a_peer_that_is_missing_or_fails_is_recorded_not_run(tmp_path: Path) -> None:
    jobs = [
        {"stream": "s", "learner": "VW --oaa", "extra": None, "limit": None, "tmp": str(tmp_path)},
        {
            "stream": "s",
            "learner": "River kNN",
            "extra": None,
            "limit": None,
            "window": 10,
            "data": str(tmp_path / "missing.npz"),
            "tmp": str(tmp_path),
        },
    ]
    results = suite.execute(
        jobs, {}, {"vowpalwabbit": "vowpalwabbit unavailable: no wheel"}, 1, 120.0
    )
    assert results[0]["status"] == "not run"
    assert results[0]["reason"] == "vowpalwabbit unavailable: no wheel"
    assert results[1]["status"] == "not run"
    assert results[1]["reason"].startswith("failed: ") and "missing.npz" in results[1]["reason"]


def test_readme_block_is_what_the_suite_renders_from_its_committed_json() -> None:
    text = (ROOT / "README.md").read_text()
    block = suite.readme_block(text)
    source = block.split("from ", 1)[1].split(";", 1)[0].strip()
    report = json.loads((ROOT / source).read_text())
    assert block == suite.render_readme_block(report, source)
    assert report["readme_curve"] in block
    assert (ROOT / report["readme_curve"]).stat().st_size < 250_000


def test_update_replaces_only_the_rows_it_runs_and_says_where_the_others_came_from(
    tiny_run: tuple[dict[str, Any], Path], tmp_path: Path
) -> None:
    before, out = tiny_run
    (tmp_path / "suite-test.json").write_text((out / "suite-test.json").read_text())
    report = suite.run_suite(
        mode="test",
        streams=["embedded"],
        learners=[spec("spela 1x1024")],
        limit=300,
        limits={},
        window=100,
        grid=(0.01,),
        install=False,
        outdir=tmp_path,
        update=True,
    )
    saved = json.loads((tmp_path / "suite-test.json").read_text())
    assert saved == json.loads(json.dumps(report))
    old = {(r["learner"], (r.get("extra") or {}).get("lr")): r for r in before["results"]}
    new = {(r["learner"], (r.get("extra") or {}).get("lr")): r for r in saved["results"]}
    assert set(new) == set(old) | {("spela 1x1024", None)}
    for key, r in old.items():  # kept as they were, with the run they came from
        assert json.loads(json.dumps(r)) == new[key]
        assert new[key]["run"] == before["started"]
    assert new[("spela 1x1024", None)]["run"] == saved["started"]
    assert new[("spela 1x1024", None)]["n"] == 300
    assert [x["name"] for x in saved["learners"]] == [
        "spela 2x1024",
        "backprop 2x1024",
        "River SoftmaxRegression",
        "spela 1x1024",
    ]
    assert saved["updated_from"]["started"] == before["started"]
    header = suite._header(saved)[0]
    assert f"rows of spela 1x1024 run {saved['started']}" in header
    assert f"every other row from earlier runs, {before['started']}" in header
    assert "| spela 1x1024 |" in (tmp_path / "suite-test.md").read_text()
    targets = {t["target"]: t for t in saved["targets"]}
    assert (
        targets["accuracy >= torch backprop (same shape)"]["spela"]
        == (new[("spela 2x1024", None)]["accuracy"])
    )


def test_update_without_an_earlier_report_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="run the suite in this mode once first"):
        suite.run_suite(
            mode="test",
            streams=["embedded"],
            learners=[spec("spela 1x1024")],
            limit=50,
            limits={},
            window=10,
            grid=(0.01,),
            install=False,
            outdir=tmp_path,
            update=True,
        )
