"""MQTT in and out against a real mosquitto (started here on a free 127.0.0.1 port, stopped at
the end): replies are the predictions made before learning, late labels and control messages
work as over TCP, the in-flight window holds, a broker restart loses nothing and learns no
duplicate twice, an unreachable broker is an ``Error:``, and the command checkpoints as always."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from benchmarks.broker import Mosquitto, free_port, mosquitto_binary
from cli.app import app
from spela_stream.errors import SourceError
from spela_stream.model import SpelaMLP
from spela_stream.prequential import Prequential, Report
from spela_stream.service import Service
from spela_stream.sources.records import LineParser
from storage import CheckpointStore

REQUIRED = os.environ.get("SPELA_REQUIRE_MQTT") == "1"  # CI: a missing piece fails, never skips
if mosquitto_binary() is None:
    if REQUIRED:
        raise RuntimeError("SPELA_REQUIRE_MQTT=1 but mosquitto is not installed")
    pytest.skip("mosquitto is not installed (apt-get install -y mosquitto)",
                allow_module_level=True)  # fmt: skip
if REQUIRED:
    import paho.mqtt.client as mqtt
else:
    mqtt = pytest.importorskip("paho.mqtt.client",
                               reason="paho-mqtt missing: pip install -e '.[dev]'")  # fmt: skip

from spela_stream.sources.mqtt import MqttBridge, parse_url  # noqa: E402

TIMEOUT = 60.0
ROOT = Path(__file__).resolve().parents[1]


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def csv_lines(X: np.ndarray, y: list[int]) -> list[str]:
    return [",".join(f"{v:.6g}" for v in row) + f",{k}" for row, k in zip(X, y, strict=True)]


class Peer:
    """A sensor: publishes at QoS 1 and collects what comes back on ``listen`` topics."""

    def __init__(self, port: int, *listen: str) -> None:
        self.got: list[tuple[str, dict[str, Any], Any]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 2)
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        for topic in listen:
            subscribed.clear()
            self.client.subscribe(topic, qos=1)
            assert subscribed.wait(TIMEOUT)

    def _on_message(self, _: Any, __: Any, message: Any) -> None:
        correlation = getattr(message.properties, "CorrelationData", None)
        with self.lock:
            self.got.append((message.topic, json.loads(message.payload), correlation))

    def publish(self, topic: str, *payloads: str, properties: Any = None) -> None:
        infos = [self.client.publish(topic, p, qos=1, properties=properties) for p in payloads]
        for info in infos:
            info.wait_for_publish(TIMEOUT)

    def replies(self, n: int) -> list[dict[str, Any]]:
        wait_until(lambda: len(self.got) >= n, f"{n} replies (have {len(self.got)})")
        with self.lock:
            return [row for _, row, _ in self.got[:n]]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker") as b:
        yield b


class Serving:
    """A service over a bridge, its learner on a thread (the CLI runs it on its main thread)."""

    def __init__(self, bridge: MqttBridge, loop: Prequential, **kwargs: Any) -> None:
        self.bridge = bridge
        self.service = Service(loop, bridge, tick=0.05, **kwargs)
        self.reports: list[Report] = []
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._learn, daemon=True)
        self.thread.start()

    def _learn(self) -> None:
        torch.set_num_threads(1)
        try:
            self.reports.extend(self.service.run(every=50))
        except BaseException as exc:
            self.errors.append(exc)

    def join(self) -> None:
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive() and not self.errors, self.errors
        self.service.close()


# ---------------------------------------------------------------- URLs and errors


@pytest.mark.parametrize(
    "url, parsed",
    [
        ("mqtt://127.0.0.1:1884/sensors/+/x", ("127.0.0.1", 1884, "sensors/+/x")),
        ("mqtt://broker/#", ("broker", 1883, "#")),
        ("mqtt://[::1]:1883/a", ("::1", 1883, "a")),
    ],
)
def test_urls_name_the_broker_and_the_topic_filter(url: str, parsed: tuple[str, int, str]) -> None:
    assert parse_url(url) == parsed


@pytest.mark.parametrize(
    "url", ["mqtt://127.0.0.1:1883", "mqtt://127.0.0.1:1883/", "mqtt://:1883/a", "mqtt://h:x/a",
            "mqtt://h:70000/a", "tcp://h:1/a"],
)  # fmt: skip
def test_bad_urls_say_how_to_write_one(url: str) -> None:
    with pytest.raises(SourceError, match="write mqtt://HOST:PORT/TOPIC"):
        parse_url(url)


def test_an_unreachable_broker_is_an_error_naming_it() -> None:
    port = free_port()
    with pytest.raises(SourceError, match=f"mqtt://127.0.0.1:{port}/t: cannot reach the broker"):
        MqttBridge("127.0.0.1", port, "t")


def test_learn_from_an_unreachable_broker_exits_1_and_leaves_no_run(tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "runs.db"
    result = CliRunner().invoke(
        app, ["learn", "--source", f"mqtt://127.0.0.1:{port}/t", "--db", str(db), "-q"]
    )
    assert result.exit_code == 1, result.output
    assert f"Error: mqtt://127.0.0.1:{port}/t: cannot reach the broker" in result.output
    with CheckpointStore(db) as store:
        assert store.runs() == []


def test_without_paho_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "paho.mqtt.client", None)  # import now raises ImportError
    with pytest.raises(SourceError, match=r"pip install 'spela-stream\[mqtt\]'"):
        MqttBridge("127.0.0.1", 1, "t")


def test_predict_over_mqtt_needs_a_reply_topic(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["predict", "--source", "mqtt://127.0.0.1:1/t", "--db", str(tmp_path / "r.db")]
    )
    assert result.exit_code == 2
    assert "predict over mqtt:// answers on a topic: give --publish TOPIC" in result.output


# ---------------------------------------------------------------- the service over a broker


def test_replies_are_the_predictions_made_before_learning(broker: Mosquitto, blobs: Any) -> None:
    """Each message's reply, on the --publish topic with {topic} filled in, is what the
    prequential loop predicts before learning it; the model ends as one fed the same lines."""
    X, y = blobs(n=120)
    lines = csv_lines(X, y)
    peer = Peer(broker.port, "out/#")
    bridge = MqttBridge("127.0.0.1", broker.port, "sensors/+", publish="out/{topic}")
    loop = Prequential(SpelaMLP(hidden=(32, 32), seed=0))
    serving = Serving(bridge, loop)
    peer.publish("sensors/a", *lines, '{"control": "shutdown"}')
    replies = peer.replies(120)
    serving.join()
    reference = Prequential(SpelaMLP(hidden=(32, 32), seed=0))
    parser = LineParser()
    for i, (line, reply) in enumerate(zip(lines, replies, strict=True)):
        sample = parser.parse(line.encode(), i, "")
        p = reference.step(sample.x, sample.y)  # type: ignore[union-attr]
        assert reply == {"label": p.label, "confidence": round(p.confidence, 6),
                         "layer": p.layer, "learned": True,
                         } | ({"learned": False, "held": True} if i == 0 else {})  # fmt: skip
    assert {topic for topic, _, _ in peer.got} == {"out/sensors/a"}
    assert loop.samples == loop.learned == 120
    assert loop.metrics.reported.accuracy == reference.metrics.reported.accuracy > 0.8
    assert bridge.stats.messages == 121 and bridge.stats.duplicates == 0
    peer.close()


def test_late_labels_controls_and_response_topics(broker: Mosquitto) -> None:
    """An unlabelled sample with an id waits for its label, as over TCP; metrics and bad lines
    get their replies; a message naming an MQTT 5 response topic is answered there."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    peer = Peer(broker.port, "out", "mine")
    bridge = MqttBridge("127.0.0.1", broker.port, "in", publish="out")
    serving = Serving(bridge, Prequential(SpelaMLP(hidden=(16,), seed=0)))
    peer.publish(
        "in",
        '{"x": [1, 0], "y": "a"}', '{"x": [0, 1], "y": "b"}',
        '{"x": [1, 0], "id": "s1"}', '{"id": "s1", "y": "a"}', '{"id": "nope", "y": "a"}',
        '{"x": [1, "oops"], "y": "a"}', '{"control": "metrics"}',
    )  # fmt: skip
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic, props.CorrelationData = "mine", b"q7"
    peer.publish("in", '{"x": [0, 1]}', properties=props)
    peer.replies(8)
    peer.publish("in", '{"control": "shutdown"}')
    serving.join()
    out = [r for t, r, _ in peer.got if t == "out"]
    assert out[2] == {**out[2], "id": "s1", "pending": True, "learned": False}
    assert out[3]["id"] == "s1" and out[3]["correct"] is True and out[3]["learned"] is True
    assert "no sample with id 'nope'" in out[4]["error"]
    assert out[5]["error"].startswith("mqtt in message 6:")
    assert out[6]["control"] == "metrics" and out[6]["learned"] == 3
    # messages counts what the bridge has received: the 8th may or may not be in when the 7th
    # (metrics) is answered, as paho's thread and the learner race; both are right
    assert out[6]["messages"] in (7, 8) and out[6]["duplicates"] == 0
    ((topic, mine, correlation),) = [g for g in peer.got if g[0] == "mine"]
    assert correlation == b"q7" and mine["label"] in ("a", "b") and mine["learned"] is False
    peer.close()


def test_the_broker_holds_back_more_than_the_window(broker: Mosquitto) -> None:
    """With 40 messages queued at the broker, the bridge holds at most ``window`` in its queue
    and one more in paho's hands, however many the broker sends: each acknowledgement lets
    more in, and the 40 all arrive."""
    window = 4
    peer = Peer(broker.port)
    bridge = MqttBridge("127.0.0.1", broker.port, "in", window=window)
    peer.publish("in", *[f"{i},1,a" for i in range(40)])
    for answered in range(36):
        wait_until(lambda a=answered: bridge.requests.qsize() == window, "the queue to fill")
        assert answered + window <= bridge.stats.messages <= answered + window + 1
        bridge.reply(bridge.requests.get_nowait(), "{}")
    wait_until(lambda: bridge.stats.messages == 40, "all 40")
    bridge.close()
    peer.close()


def test_a_broker_restart_loses_nothing_and_learns_each_message_once(broker: Mosquitto) -> None:
    """The broker restarts mid-stream: the bridge reconnects; what was published while it was
    down arrives; messages sent again around the restart (as a publisher resends what it had
    not heard acknowledged) are counted as duplicates and not learned; identical readings in
    steady flow are not duplicates."""
    peer = Peer(broker.port)
    bridge = MqttBridge("127.0.0.1", broker.port, "in")
    loop = Prequential(SpelaMLP(hidden=(16,), seed=0))
    serving = Serving(bridge, loop)
    before = [f"{i},{i % 3},{'abc'[i % 3]}" for i in range(60)]
    peer.publish("in", *before, before[0])  # the same reading twice: data, learned twice
    wait_until(lambda: loop.samples == 61, "61 samples learned")
    broker.restart()
    wait_until(lambda: bridge.stats.reconnects == 1 and bridge.stats.connected, "a reconnect")
    wait_until(lambda: peer.client.is_connected(), "the publisher's reconnect")
    after = [f"{i},{i % 3},{'abc'[i % 3]}" for i in range(60, 100)]
    peer.publish("in", *before[-5:], *after)  # five resent, then news
    peer.publish("in", '{"control": "shutdown"}')
    serving.join()
    assert bridge.stats.duplicates == 5
    assert loop.samples == loop.learned == 61 + 40
    assert bridge.stats.messages == 61 + 40 + 1  # the shutdown line too
    peer.close()


# ---------------------------------------------------------------- the command, as a process


def spawn(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cli.app", *args], cwd=cwd, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def wait_subscribed(proc: subprocess.Popen[str]) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("subscribed to"):
            return
    raise AssertionError(f"no subscription; exit {proc.wait()}")


def test_learn_checkpoints_on_a_signal_and_resumes_on_new_messages(
    broker: Mosquitto, blobs: Any, tmp_path: Path
) -> None:
    """The command learns what is published, answers on --publish, checkpoints on SIGINT
    (exit 130); resumed, it goes on with new messages, and a shutdown message ends it (exit 0)."""
    X, y = blobs(n=150)
    lines = csv_lines(X, y)
    db = tmp_path / "runs.db"
    peer = Peer(broker.port, "out")
    args = ["learn", "--source", f"{broker.url}/in", "--publish", "out", "--db", str(db),
            "--run", "m", "--hidden", "16", "-q"]  # fmt: skip
    proc = spawn(args, tmp_path)
    wait_subscribed(proc)
    peer.publish("in", *lines[:100])
    peer.replies(100)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(TIMEOUT) == 130, proc.stderr.read() if proc.stderr else ""
    with CheckpointStore(db) as store:
        (info,) = store.runs()
        assert info.source == f"{broker.url}/in" and store.load("m").info.samples == 100
    proc = spawn(["learn", "--resume", "--run", "m", "--publish", "out", "--db", str(db), "-q"],
                 tmp_path)  # fmt: skip
    wait_subscribed(proc)
    peer.publish("in", *lines[100:], '{"control": "shutdown"}')
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    assert out.startswith("accuracy ") and f"after 150 samples of {broker.url}/in" in out
    assert len(peer.replies(150)) == 150
    with CheckpointStore(db) as store:
        assert store.load("m").info.samples == 150
    predict = spawn(["predict", "--source", f"{broker.url}/ask", "--publish", "said", "--db",
                     str(db)], tmp_path)  # fmt: skip
    wait_subscribed(predict)
    asker = Peer(broker.port, "said")
    asker.publish("ask", lines[0].rpartition(",")[0], '{"control": "shutdown"}')
    (answer,) = asker.replies(1)
    assert answer["learned"] is False and answer["label"] in set(y)
    predict.wait(TIMEOUT)
    assert predict.returncode == 0
    peer.close()
    asker.close()
