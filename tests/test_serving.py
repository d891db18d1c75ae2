"""storage.serving: a run served over a socket (learn) or a saved model answering (predict),
from Python, on real sockets on 127.0.0.1 (ephemeral ports)."""

from __future__ import annotations

import io
import json
import socket
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spela_stream.config import Input, LearnOptions, Output, PredictOptions, ServeOptions
from spela_stream.display import Progress
from spela_stream.errors import ConfigError
from spela_stream.model import SpelaMLP
from spela_stream.sources.layout import Layout
from spela_stream.stopping import StopGuard
from storage import CheckpointStore
from storage.run import Run
from storage.serving import serve_learning, serve_predictions, service_layout

TIMEOUT = 60.0  # a hung client fails the test after this, it never waits forever


def test_service_layout_names_the_options_of_a_contradiction() -> None:
    assert service_layout(Input("tcp://127.0.0.1:0"), ServeOptions()) is None
    layout = service_layout(Input("tcp://x:1", features=3), ServeOptions())
    assert layout == Layout(3, None, labelled=True)
    named = service_layout(
        Input("tcp://x:1", label_column="none"), ServeOptions(columns=("a", "b"))
    )
    assert named is not None and (named.features, named.labelled) == (2, False)
    with pytest.raises(ConfigError) as caught:
        service_layout(Input("tcp://x:1", features=2), ServeOptions(columns=("a", "b", "c", "y")))
    assert str(caught.value) == (
        "`n_features` 2 disagrees with the 4 `columns` a, b, c, y (3 features and a label)"
    )


@pytest.mark.parametrize("source", ["tcp://127.0.0.1:0", "mqtt://127.0.0.1:1/t"])
def test_serve_learning_refuses_skip_before_it_listens(tmp_path: Path, source: str) -> None:
    heard: list[str] = []
    with CheckpointStore(tmp_path / "r.db") as store:
        run = Run.start(store, SpelaMLP(hidden=(8,), seed=0), source, name="s")
        opts = LearnOptions(Input(source), tmp_path / "r.db", "s", False, {}, skip=5)
        with pytest.raises(ConfigError) as caught:
            serve_learning(opts, run, StopGuard(), Progress(quiet=True), print, heard.append)
        assert store.runs() == []  # nothing was made
    kind = source[: source.index("//") + 2]
    assert str(caught.value) == (
        f"`skip` does not apply to {kind} (a service's clients send new lines)"
    )
    assert heard == []


def test_serve_predictions_over_mqtt_needs_a_topic_before_it_opens_anything(
    tmp_path: Path,
) -> None:
    opts = PredictOptions(Input("mqtt://127.0.0.1:1/t"), tmp_path / "none.db", None, None,
                          Output.csv, 1)  # fmt: skip
    with pytest.raises(ConfigError, match=r"^predict over mqtt:// answers on a topic: give "
                       r"`publish` TOPIC$"):  # fmt: skip
        serve_predictions(opts, print)
    assert not (tmp_path / "none.db").exists()


def test_serve_learning_learns_what_a_client_sends_and_stops_on_shutdown(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = [",".join(f"{v:.4f}" for v in rng.normal(size=3)) + f",{i % 2}" for i in range(30)]
    heard: list[str] = []
    replies: list[dict[str, Any]] = []
    listening = threading.Event()

    def log(message: str) -> None:
        heard.append(message)
        listening.set()

    def client() -> None:
        assert listening.wait(TIMEOUT)
        host, port = heard[0].removeprefix("listening on tcp://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
            sock.sendall("".join(f"{r}\n" for r in rows).encode() + b'{"control": "shutdown"}\n')
            with sock.makefile("rb") as replies_in:
                replies.extend(json.loads(line) for line in replies_in)

    db = tmp_path / "r.db"
    stopped: list[str | None] = []
    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    with CheckpointStore(db) as store, StopGuard() as guard:
        run = Run.start(store, SpelaMLP(hidden=(8,), seed=0), "tcp://127.0.0.1:0", name="s")
        opts = LearnOptions(Input("tcp://127.0.0.1:0", features=3), db, "s", False, {})
        serve_learning(opts, run, guard, Progress(quiet=True, err=io.StringIO()),
                       stopped.append, log)  # fmt: skip
        saved = [ck.samples for ck in store.checkpoints("s")]
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert heard == [f"listening on {run.source}"] and run.source != "tcp://127.0.0.1:0"
    assert stopped == ["a shutdown line"]
    assert run.loop.samples == 30 and len(replies) == 31
    assert replies[-1]["control"] == "shutdown" and replies[-1]["samples"] == 30
    assert max(saved) == 30
