"""Samples/s through an MQTT broker against the same lines from a file.

    python -m benchmarks.mqtt_bench            # 3,000 MNIST lines (~2 minutes on 2 busy cores)
    python -m benchmarks.mqtt_bench --n 500    # a quick look

Both rows run a real ``spela-stream learn`` process (default ``SpelaMLP()``, 784-1024-1024,
1 torch thread, a checkpoint only at the end) on the first ``--n`` MNIST test digits as CSV
lines. ``file``: ``--source digits.csv``. ``mqtt``: ``--source mqtt://127.0.0.1:PORT/digits
--publish answers`` against a mosquitto started here; a publisher sends every line at QoS 1 as
fast as the broker takes them and a subscriber collects the answers. Figures: the loop's own
rate (``samples_per_s`` of the summary) and, for MQTT, end to end: first publish to last
answer. Timings on a shared machine are indicative only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.broker import Mosquitto
from spela_stream.datasets import load_mnist

TIMEOUT = 900.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def mnist_lines(n: int) -> list[str]:
    X, y = load_mnist(n)
    return [
        ",".join(map(str, row)) + f",{k}"
        for row, k in zip(X.astype(np.int64).tolist(), y.tolist(), strict=True)
    ]


def learn_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli.app", "learn", "--quiet", "--json",
            "--checkpoint-seconds", "0", *args]  # fmt: skip


def summary(stdout: str) -> dict[str, Any]:
    rows = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    (last,) = [r for r in rows if r.get("kind") == "summary"]
    return last


def from_file(lines: list[str], folder: Path) -> dict[str, Any]:
    data = folder / "digits.csv"
    data.write_text("\n".join(lines) + "\n")
    t0 = time.perf_counter()
    out = subprocess.run(learn_cmd("--source", str(data), "--db", str(folder / "file.db")),
                         capture_output=True, text=True, check=True, timeout=TIMEOUT)  # fmt: skip
    wall = time.perf_counter() - t0
    s = summary(out.stdout)
    return {"source": "file", "samples": s["samples"], "loop_per_s": s["samples_per_s"],
            "wall_s": wall, "accuracy": s["accuracy"]}  # fmt: skip


def through_broker(lines: list[str], folder: Path) -> dict[str, Any]:
    import paho.mqtt.client as mqtt

    with Mosquitto(folder / "broker") as broker:
        cmd = learn_cmd("--source", f"{broker.url}/digits", "--publish", "answers",
                        "--db", str(folder / "mqtt.db"))  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("subscribed to"):
                break
        else:
            raise RuntimeError(f"the learner ended before subscribing ({proc.wait()})")
        answered = threading.Event()
        count = [0]
        last = [0.0]

        def on_message(*_: Any) -> None:
            count[0] += 1
            last[0] = time.perf_counter()
            if count[0] == len(lines):
                answered.set()

        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        sub.on_message = on_message
        subscribed = threading.Event()
        sub.on_subscribe = lambda *_: subscribed.set()
        sub.connect("127.0.0.1", broker.port)
        sub.loop_start()
        sub.subscribe("answers", qos=1)
        subscribed.wait(30)
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        pub.max_inflight_messages_set(256)
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        t0 = time.perf_counter()
        infos = [pub.publish("digits", line, qos=1) for line in lines]
        for info in infos:
            info.wait_for_publish(TIMEOUT)
        published = time.perf_counter() - t0
        if not answered.wait(TIMEOUT):
            raise RuntimeError(f"only {count[0]} answers of {len(lines)}")
        pub.publish("digits", '{"control": "shutdown"}', qos=1).wait_for_publish(30)
        out, err = proc.communicate(timeout=TIMEOUT)
        for c in (pub, sub):
            c.disconnect()
            c.loop_stop()
    if proc.returncode != 0:
        raise RuntimeError(err)
    s = summary(out)
    return {"source": "mqtt", "samples": s["samples"], "loop_per_s": s["samples_per_s"],
            "end_to_end_per_s": len(lines) / (last[0] - t0), "publish_s": published,
            "accuracy": s["accuracy"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    args = parser.parse_args()
    lines = mnist_lines(args.n)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = [from_file(lines, folder), through_broker(lines, folder)]
    for row in rows:
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))


if __name__ == "__main__":
    main()
