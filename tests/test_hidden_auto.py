"""hidden="auto": the width follows the first sample's, is fixed then, and is what is saved."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.app import app
from spela_stream.datasets import iter_mnist
from spela_stream.errors import ConfigError, ModelError
from spela_stream.model import AUTO_DEPTH, SpelaMLP, auto_hidden
from spela_stream.prequential import prequential
from storage import CheckpointStore
from storage.run import Run

States = Callable[[dict[str, Any], dict[str, Any]], bool]


def _json(state: dict[str, Any]) -> dict[str, Any]:
    """A state as a checkpoint keeps it: arrays as they are, the rest through JSON."""
    arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    rest = json.loads(json.dumps({k: v for k, v in state.items() if k not in arrays}))
    return {**rest, **arrays}


@pytest.mark.parametrize(
    ("d", "widths"), [(1, (512, 512)), (8, (512, 512)), (64, (512, 512)), (65, (1024, 1024)),
                      (784, (1024, 1024))],
)  # fmt: skip
def test_the_rule_and_the_default(d: int, widths: tuple[int, ...]) -> None:
    # benchmarks/results/width.md: 512 costs at most 0.8 points against 1024 on inputs of up to
    # 64 features and gains up to 2.8 on drift; MNIST's 784 pixels lose 0.1 at 512, so keep 1024
    assert auto_hidden(d) == widths
    model = SpelaMLP(memory=0)
    assert model.config()["hidden"] == "auto"
    model.learn_one(np.ones(d), 0)
    assert model.hidden == widths


@pytest.mark.parametrize("d", [3, 16, 64, 784])
def test_the_first_sample_fixes_the_rules_shape(d: int) -> None:
    model = SpelaMLP(hidden="auto", memory=0)
    assert model.hidden == () and model.depth == AUTO_DEPTH
    assert model.config()["hidden"] == "auto"
    assert model.predict_one(np.ones(d)) is None  # predicting builds nothing
    assert model.hidden == ()
    model.learn_one(np.ones(d), "a")
    widths = auto_hidden(d)
    assert len(widths) == AUTO_DEPTH and model.hidden == widths
    assert [(layer.d_in, layer.d_out) for layer in model.layers] == list(
        zip((d, *widths[:-1]), widths, strict=True)
    )
    assert model.config()["hidden"] == list(widths)
    model.learn_one(np.zeros(d), "b")  # later samples change nothing about the shape
    assert model.hidden == widths


def test_auto_learns_exactly_what_its_built_shape_learns(
    blobs: Callable[..., Any], states_equal: States
) -> None:
    X, y = blobs(n=200, d=5)
    auto = SpelaMLP(hidden="auto", seed=3)
    fixed = SpelaMLP(hidden=auto_hidden(5), seed=3)
    for x, label in zip(X, y, strict=True):
        assert auto.predict_learn_one(x, label) == fixed.predict_learn_one(x, label)
    assert states_equal(auto.state_dict(), fixed.state_dict())


def test_a_saved_auto_model_loads_as_the_shape_it_built(
    blobs: Callable[..., Any], states_equal: States
) -> None:
    X, y = blobs(n=60, d=4)
    model = SpelaMLP(hidden="auto", seed=1)
    for x, label in zip(X[:30], y[:30], strict=True):
        model.learn_one(x, label)
    back = SpelaMLP.from_state(_json(model.state_dict()))
    assert back.hidden == auto_hidden(4) and back.config() == model.config()
    for x, label in zip(X[30:], y[30:], strict=True):
        assert back.predict_learn_one(x, label) == model.predict_learn_one(x, label)
    assert states_equal(back.state_dict(), model.state_dict())


def test_an_unbuilt_auto_model_saves_and_loads_as_auto(states_equal: States) -> None:
    back = SpelaMLP.from_state(_json(SpelaMLP(hidden="auto", seed=2).state_dict()))
    assert back.hidden == () and back.config()["hidden"] == "auto"
    fresh = SpelaMLP(hidden="auto", seed=2)
    for model in (back, fresh):
        model.learn_one(np.arange(7.0), 1)
    assert back.hidden == auto_hidden(7)
    assert states_equal(back.state_dict(), fresh.state_dict())


def test_a_state_of_a_fixed_shape_loads_unchanged_whatever_the_rule_says() -> None:
    # A checkpoint written before "auto" (or with --hidden given) names its widths.
    model = SpelaMLP(hidden=(24, 24), seed=0, memory=0)
    model.learn_one(np.ones(784), 0)
    state = _json(model.state_dict())
    assert state["config"]["hidden"] == [24, 24]
    back = SpelaMLP.from_state(state)
    assert back.hidden == (24, 24) and back.layers[0].weight.shape == (24, 784)


def test_a_state_with_layers_but_an_auto_config_is_refused() -> None:
    model = SpelaMLP(hidden=(8,), seed=0)
    model.learn_one(np.ones(3), 0)
    state = model.state_dict()
    state["config"] = {**state["config"], "hidden": "auto"}
    with pytest.raises(ModelError, match="hidden is 'auto'"):
        SpelaMLP.from_state(state)


def test_a_clone_of_an_auto_model_follows_its_own_input() -> None:
    model = SpelaMLP(hidden="auto", memory=0)
    model.learn_one(np.ones(3), 0)
    fresh = model.clone()
    assert fresh.hidden == () and fresh.config()["hidden"] == "auto"
    fresh.learn_one(np.ones(784), 0)
    assert fresh.hidden == auto_hidden(784)


@pytest.mark.parametrize("hidden", ["64", "wide", "", "Auto"])
def test_hidden_text_other_than_auto_is_a_config_error(hidden: str) -> None:
    with pytest.raises(ConfigError, match="layer widths or 'auto'"):
        SpelaMLP(hidden=hidden)  # type: ignore[arg-type]


def test_the_loop_scores_every_layer_of_an_auto_model() -> None:
    # The loop sizes its per-layer metrics before any sample: the depth is known up front.
    last = list(prequential(SpelaMLP(hidden="auto"), iter_mnist(60), every=60))[-1]
    assert len(last.layer_accuracy) == AUTO_DEPTH and last.samples == 60


def test_a_run_records_the_widths_its_first_sample_built(tmp_path: Path) -> None:
    with CheckpointStore(tmp_path / "r.db") as store:
        run = Run.start(store, SpelaMLP(hidden="auto", seed=0), "builtin:mnist", name="a",
                        checkpoint_every=20, checkpoint_seconds=None)  # fmt: skip
        run.learn(iter_mnist(50))
        assert store.run("a").config["hidden"] == list(auto_hidden(784))
        resumed = Run.resume(store, "a")
        assert resumed.loop.model.hidden == auto_hidden(784)
        assert resumed.learn(iter_mnist(30)).samples == 80  # 50 before, 30 more
        # a run that stopped before its first checkpoint keeps "auto" and starts afresh
        store.create_run("k", SpelaMLP(hidden="auto").config(), "builtin:mnist")
        assert store.run("k").config["hidden"] == "auto"
        Run.resume(store, "k", log=lambda _: None).learn(iter_mnist(10))
        assert store.run("k").config["hidden"] == list(auto_hidden(784))


def test_the_cli_takes_hidden_auto_and_runs_shows_the_built_widths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SPELA_DB", raising=False)
    runner = CliRunner()
    assert "auto" in runner.invoke(app, ["learn", "--help"]).stdout
    result = runner.invoke(app, ["learn", "--hidden", "auto", "--limit", "30", "--run", "a"])
    assert result.exit_code == 0, result.output
    shown = ",".join(str(w) for w in auto_hidden(784))
    listing = runner.invoke(app, ["runs"])
    assert listing.exit_code == 0, listing.output
    assert f" {shown} " in listing.stdout.splitlines()[-1]
    row = json.loads(runner.invoke(app, ["runs", "--json"]).stdout.splitlines()[-1])
    assert row["config"]["hidden"] == list(auto_hidden(784))
    bad = runner.invoke(app, ["learn", "--hidden", "automatic", "--limit", "5"])
    assert bad.exit_code == 2 and "or auto" in bad.stderr
