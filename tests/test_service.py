"""The socket service as a library: real sockets on 127.0.0.1 (ephemeral ports), several clients
at once, delayed labels, bad and overlong lines, disconnects mid-line, control lines, resume."""

from __future__ import annotations

import gzip
import io
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spela_stream.client import send, send_file
from spela_stream.errors import ConfigError, SourceError
from spela_stream.model import SpelaMLP
from spela_stream.prequential import CheckpointPolicy, Prequential, Report
from spela_stream.service import Service, layout_of, listen
from spela_stream.sources.base import Sample
from spela_stream.sources.layout import Layout
from spela_stream.sources.records import Control, HeaderLine, LateLabel, LineParser
from spela_stream.sources.tcp import LineServer, parse_url
from storage import CheckpointStore
from storage.session import Session, load_loop

TIMEOUT = 60.0  # a hung test fails after this, it never waits forever


def model() -> SpelaMLP:
    return SpelaMLP(hidden=(32, 32), seed=0)


def csv_lines(X: np.ndarray, y: list[int]) -> list[str]:
    return [",".join(f"{v:.6g}" for v in row) + f",{k}" for row, k in zip(X, y, strict=True)]


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll until ``condition`` holds; fail (never hang) if it does not within TIMEOUT."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


class Client:
    """A raw socket client: send lines, read JSON replies."""

    def __init__(self, server: LineServer) -> None:
        self.sock = socket.create_connection(server.address, timeout=TIMEOUT)
        self.file = self.sock.makefile("rb")

    def send(self, *lines: str | bytes) -> None:
        data = [line if isinstance(line, bytes) else line.encode() for line in lines]
        self.sock.sendall(b"".join(d + b"\n" for d in data))

    def replies(self, n: int) -> list[dict[str, Any]]:
        return [json.loads(self.file.readline()) for _ in range(n)]

    def ask(self, *lines: str | bytes) -> list[dict[str, Any]]:
        self.send(*lines)
        return self.replies(len(lines))

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@dataclass
class Running:
    server: LineServer
    service: Service
    reports: list[Report] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    thread: threading.Thread | None = None

    def stop(self, checkpoint: int | None = None) -> dict[str, Any]:
        """Shut down by control line; the reply comes once the run has ended."""
        client = Client(self.server)
        client.send('{"control": "shutdown"}')
        assert self.thread is not None
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "the service did not stop"
        assert not self.errors, self.errors
        self.service.close(checkpoint)
        (reply,) = client.replies(1)
        client.close()
        return reply


@contextmanager
def serving(
    loop: Prequential,
    *,
    checkpoint: CheckpointPolicy | None = None,
    limit: int | None = None,
    max_line: int = 1 << 20,
    window: int = 256,
    **kwargs: Any,
) -> Iterator[Running]:
    """A service on an ephemeral port, its learner on a thread (as the main thread runs it)."""
    server = LineServer("127.0.0.1", 0, max_line=max_line, window=window)
    running = Running(server, Service(loop, server, tick=0.05, **kwargs))

    def learn() -> None:
        # OpenMP's thread count is per thread: pin it, so this thread's batched replay steps sum
        # in the same order as the main thread's reference (the CLI runs the model on its main
        # thread; the replay memory's micro-batches are where the order shows).
        torch.set_num_threads(1)
        try:
            running.reports.extend(
                running.service.run(every=50, checkpoint=checkpoint, limit=limit)
            )
        except BaseException as exc:  # surfaced by stop()
            running.errors.append(exc)

    running.thread = threading.Thread(target=learn, daemon=True)
    running.thread.start()
    try:
        yield running
    finally:
        server.close()


# ---------------------------------------------------------------- answers, in order


def test_replies_are_the_predictions_made_before_learning(blobs: Any) -> None:
    """One client: every reply equals what the prequential loop predicts for that sample before
    it learns it, and the served model ends bit-identical to one that learned the same lines."""
    X, y = blobs(n=120)
    lines = csv_lines(X, y)
    loop = Prequential(model())
    with serving(loop) as running:
        client = Client(running.server)
        replies = client.ask(*lines)
        assert running.stop()["control"] == "shutdown"
    reference = Prequential(model())
    parser = LineParser()
    for i, (line, reply) in enumerate(zip(lines, replies, strict=True)):
        sample = parser.parse(line.encode(), i, "")
        assert not isinstance(sample, (Control, LateLabel, HeaderLine, SourceError))
        p = reference.step(sample.x, sample.y)
        assert reply == {
            "label": p.label, "confidence": round(p.confidence, 6), "layer": p.layer,
            "learned": True,
        } | ({"learned": False, "held": True} if i == 0 else {})  # fmt: skip
        # the first line waits for a second of its width to confirm the layout; then it is
        # learned first, so the model is the reference's
    assert loop.samples == loop.learned == 120
    assert loop.metrics.reported.accuracy == reference.metrics.reported.accuracy > 0.8
    assert reference.model.state_dict().keys() == loop.model.state_dict().keys()
    assert all(
        np.array_equal(v, loop.model.state_dict()[k])
        for k, v in reference.model.state_dict().items()
        if isinstance(v, np.ndarray)
    )


def test_many_clients_at_once_each_get_their_replies_in_order(blobs: Any) -> None:
    """Six clients pipeline 80 lines each at the same time; each reads its own replies, in its
    own order (ids name the lines), and the one model learns all 480."""
    X, y = blobs(n=480)
    loop = Prequential(model())
    results: dict[int, list[dict[str, Any]]] = {}

    def client_run(c: int) -> None:
        client = Client(running.server)
        rows = range(c * 80, (c + 1) * 80)
        lines = [json.dumps({"x": X[i].tolist(), "y": y[i], "id": f"{c}-{i}"}) for i in rows]
        results[c] = client.ask(*lines)
        client.close()

    with serving(loop) as running:
        threads = [threading.Thread(target=client_run, args=(c,)) for c in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
        running.stop()
        assert running.server.stats.clients_total == 7  # six, and the one that shut it down
    for c in range(6):
        assert [r["id"] for r in results[c]] == [f"{c}-{i}" for i in range(c * 80, (c + 1) * 80)]
        held = [r for r in results[c] if r.get("held")]  # the layout's first line
        assert all(r["learned"] is True and r["layer"] == 1 for r in results[c] if r not in held)
    assert sum(len([r for r in results[c] if r.get("held")]) for c in range(6)) == 1
    assert loop.samples == loop.learned == 480
    assert running.reports[-1].samples == 480


# ---------------------------------------------------------------- delayed labels


def test_late_labels_learn_the_kept_features_and_score_the_old_prediction(blobs: Any) -> None:
    X, y = blobs(n=60)
    loop = Prequential(model())
    with serving(loop) as running:
        client = Client(running.server)
        client.ask(*csv_lines(X[:40], y[:40]))  # learned at once: the model knows the classes
        asked = client.ask(*[json.dumps({"x": X[i].tolist(), "id": i}) for i in range(40, 60)])
        assert all(r["pending"] and r["learned"] is False and r["id"] == str(i + 40)
                   for i, r in enumerate(asked))  # fmt: skip
        assert loop.learned == 40 and loop.metrics.reported.n == 39  # the first had no guess
        before = loop.model.state_dict()["layers.0.weight"].copy()
        settled = client.ask(*[json.dumps({"id": i, "y": y[i]}) for i in range(40, 60)])
        unknown = client.ask('{"id": 40, "y": 1}', '{"id": "nope", "label": 0}')
        running.stop()
    for i, (a, s) in enumerate(zip(asked, settled, strict=True)):
        assert s["id"] == str(40 + i) and s["learned"] is True
        assert (s["label"], s["confidence"], s["layer"]) == (
            a["label"],
            a["confidence"],
            a["layer"],
        )
        assert s["correct"] == (a["label"] == y[40 + i])
    assert loop.samples == 60 and loop.learned == 60  # counted once each, learned once each
    assert loop.metrics.reported.n == 59  # 39 at once + 20 late
    assert not np.array_equal(before, loop.model.state_dict()["layers.0.weight"])
    assert all("is waiting for a label" in r["error"] for r in unknown)
    assert running.service.counts.unknown_labels == 2
    assert running.service.pending == {}


def test_pending_is_bounded_oldest_dropped_and_counted(blobs: Any) -> None:
    X, y = blobs(n=20)
    loop = Prequential(model())
    with serving(loop, pending=3) as running:
        client = Client(running.server)
        client.ask(*csv_lines(X[:10], y[:10]))
        client.ask(*[json.dumps({"x": X[i].tolist(), "id": i}) for i in range(10, 15)])
        assert list(running.service.pending) == ["12", "13", "14"]
        dropped, kept = client.ask(json.dumps({"id": 10, "y": y[10]}),
                                   json.dumps({"id": 14, "y": y[14]}))  # fmt: skip
        metrics = client.ask('{"control": "metrics"}')[0]
        running.stop()
    assert "raise --pending" in dropped["error"] and kept["learned"] is True
    assert metrics["pending_dropped"] == 2 and metrics["pending"] == 2
    assert loop.learned == 11


# ---------------------------------------------------------------- bad input


def test_bad_lines_are_answered_and_counted_while_other_clients_go_on(blobs: Any) -> None:
    X, y = blobs(n=200)
    good = csv_lines(X, y)
    loop = Prequential(model())
    with serving(loop) as running:
        a, b = Client(running.server), Client(running.server)
        a.send(*good[:100])  # b's lines interleave with a's bad ones
        b_lines = [good[100], "1,2,oops,4,5,6,0", '{"x": [1, 2', good[101], "1,2,3", good[102],
                   b"\xff\xfe,1,2,3,4,5,0", "1,2,3,4,5,nan,0", good[103]]  # fmt: skip
        b_replies = b.ask(*b_lines)
        a_replies = a.replies(100)
        running.stop()
    errors = [r.get("error") for r in b_replies]
    assert [e is None for e in errors] == [
        True,
        False,
        False,
        True,
        False,
        True,
        False,
        False,
        True,
    ]
    port = b.sock.getsockname()[1]
    assert errors[1] == (
        f"client 127.0.0.1:{port} line 2: field 3 is 'oops', not a number (features must be "
        "numeric; if this column is the label, pass `label_column` 2); the layout confirmed by "
        "the first lines: 6 features, then the label"
    )
    assert errors[2] is not None and errors[2].startswith(
        f"client 127.0.0.1:{port} line 3: not valid JSON"
    )
    assert errors[4] is not None and "3 fields, expected 7" in errors[4]
    assert errors[6] is not None and "not UTF-8" in errors[6]
    assert errors[7] is not None and "NaN in field 6" in errors[7]
    assert all("error" not in r for r in a_replies)
    assert loop.samples == 104 and loop.rejected == 5
    assert running.service.counts.errors == 5


def test_a_sample_the_model_refuses_is_answered_and_the_model_is_unchanged(blobs: Any) -> None:
    X, y = blobs(n=30)
    loop = Prequential(model())
    with serving(loop) as running:
        client = Client(running.server)
        client.ask(*csv_lines(X, y))
        before = loop.model.state_dict()
        (refused,) = client.ask('{"x": [1, 2], "y": 0}')  # JSON may differ in width from CSV
        running.stop()
    assert refused["error"].endswith(
        ' line 31: 2 "x" values, expected 6 (the layout confirmed by the first lines: 6 features,'
        " then the label; send one record of that layout per line)"
    )
    assert np.array_equal(before["layers.1.weight"], loop.model.state_dict()["layers.1.weight"])
    assert loop.rejected == 1 and loop.samples == 30


def test_an_overlong_line_is_answered_and_skipped_to_its_newline(blobs: Any) -> None:
    X, y = blobs(n=4)
    good = csv_lines(X, y)
    loop = Prequential(model())
    with serving(loop, max_line=80) as running:
        client = Client(running.server)
        client.sock.sendall(b"1," * 60)  # the overlong line arrives in pieces
        client.sock.sendall(b"1," * 60 + b"0\n")
        client.send(good[0], "9," * 50 + "0", good[1])
        long1, ok1, long2, ok2 = client.replies(4)
        running.stop()
    port = client.sock.getsockname()[1]
    assert long1["error"] == (
        f"client 127.0.0.1:{port} line 1: line longer than 80 bytes, skipped to its newline "
        "(send one record per line; raise --max-line for wider records)"
    )
    assert long2["error"].startswith(f"client 127.0.0.1:{port} line 3: line longer than 80")
    assert ok1["held"] is True and ok2["learned"] is True  # ok2 confirms ok1's layout
    assert running.server.stats.overlong == 2 and loop.samples == 2 and loop.rejected == 2


def test_a_client_that_leaves_mid_line_costs_only_that_line(blobs: Any) -> None:
    X, y = blobs(n=40)
    good = csv_lines(X, y)
    loop = Prequential(model())
    with serving(loop) as running:
        quitter = Client(running.server)
        quitter.send(*good[:10])
        quitter.sock.sendall(good[10][:7].encode())  # half a line, then gone
        quitter.replies(10)
        quitter.close()
        silent = Client(running.server)  # connects, sends nothing, holds no thread
        wait_until(lambda: running.server.stats.partial_dropped == 1, "the disconnect")
        other = Client(running.server)
        replies = other.ask(*good[11:40])
        running.stop()
        silent.close()
    assert all(r["learned"] for r in replies)
    assert loop.samples == 39 and loop.rejected == 0


def test_a_client_that_stops_reading_is_paused_not_buffered(blobs: Any) -> None:
    """Backpressure per client: with a window of 4, a client that sends 200 lines has 4 taken
    until it is answered; another client is served meanwhile. (No learner here: the test plays
    the model's thread and takes requests by hand.)"""
    X, y = blobs(n=200)
    with LineServer("127.0.0.1", 0, window=4) as server:
        greedy = Client(server)
        greedy.send(*csv_lines(X, y))
        wait_until(lambda: server.requests.qsize() == 4, "the first window")
        time.sleep(0.2)  # a broken window would let more in by now
        assert server.requests.qsize() == 4
        other = Client(server)
        other.send("1,2,3")
        wait_until(lambda: server.requests.qsize() == 5, "the other client's line")
        taken = [server.requests.get_nowait() for _ in range(5)]
        assert [
            r.line for r in taken if r.client.name.endswith(str(greedy.sock.getsockname()[1]))
        ] == [1, 2, 3, 4]
        for request in taken[:2]:
            server.reply(request, "{}")
        wait_until(lambda: server.requests.qsize() == 2, "the window to move on by two")
        assert server.requests.get_nowait().line == 5


def test_clients_take_turns_when_the_queue_is_full(blobs: Any) -> None:
    """Four clients, a queue of 8: each slot freed goes to the next client in turn, so none
    starves (a set's fixed order once let one client win every slot). The test plays the
    model's thread, taking one request at a time."""
    X, y = blobs(n=100)
    lines = csv_lines(X, y)
    with LineServer("127.0.0.1", 0, queue_size=8) as server:
        clients = [Client(server) for _ in range(4)]
        for client in clients:
            client.send(*lines)
        wait_until(lambda: len(server._waiting) == 4, "all four clients to wait for the queue")
        taken = []
        for _ in range(40):
            wait_until(server.requests.full, "the queue to fill again")
            request = server.requests.get_nowait()
            taken.append(request.client.name)
            server.reply(request, "{}")
    counts = {name: taken[8:].count(name) for name in set(taken)}
    assert sorted(counts.values()) == [8, 8, 8, 8], counts


# ---------------------------------------------------------------- control lines, checkpoints


def test_control_lines_checkpoint_metrics_and_shutdown(tmp_path: Path, blobs: Any) -> None:
    """As in the CLI, the learner runs on this (main) thread, which owns the SQLite store; the
    client runs on another."""
    X, y = blobs(n=100)
    lines = csv_lines(X, y)
    loop = Prequential(model())
    answers: list[dict[str, Any]] = []
    with CheckpointStore(tmp_path / "runs.db") as store, LineServer("127.0.0.1", 0) as server:
        session = Session(
            store, store.create_run("svc", loop.model.config(), "tcp://x"), loop, "tcp://x"
        )
        policy = CheckpointPolicy(session.save)  # no interval: only on control lines and the end

        def client_run() -> None:
            client = Client(server)
            client.ask(*lines[:60])
            answers.extend(client.ask('{"control": "metrics"}', '{"control": "checkpoint"}',
                                      '{"control": "reboot"}'))  # fmt: skip
            client.ask(*lines[60:])
            answers.extend(client.ask('{"control": "shutdown"}'))

        thread = threading.Thread(target=client_run, daemon=True)
        thread.start()
        service = Service(loop, server, tick=0.05)
        reports = list(service.run(checkpoint=policy))
        final = session.save()
        service.close(final)
        thread.join(TIMEOUT)
        checkpoints = store.checkpoints("svc")
    metrics, saved, bad, bye = answers
    assert metrics["control"] == "metrics" and metrics["samples"] == 60 and metrics["clients"] == 1
    assert metrics["scored"] == 59 and 0.5 < metrics["accuracy"] <= 1
    assert saved == {"control": "checkpoint", "checkpoint": checkpoints[0].id, "samples": 60}
    assert "unknown control line" in bad["error"]
    assert bye == {"control": "shutdown", "samples": 100, "checkpoint": final}
    assert [c.samples for c in checkpoints] == [60, 100] and reports[-1].samples == 100


def test_a_quiet_service_checkpoints_on_the_clock_once(blobs: Any) -> None:
    """--checkpoint-seconds works while no client sends: the learner wakes regularly; and a
    service with nothing new does not checkpoint again and again."""
    X, y = blobs(n=10)
    loop = Prequential(model())
    saved: list[int] = []
    policy = CheckpointPolicy(lambda lp: saved.append(lp.samples), seconds=3600.0)
    with serving(loop, checkpoint=policy) as running:
        Client(running.server).ask(*csv_lines(X, y))
        assert saved == []
        policy.seconds = 0.01  # due from now on; only the idle ticks can notice it
        wait_until(lambda: saved == [10], "a checkpoint while the clients are quiet")
        time.sleep(0.3)  # a few dozen ticks
        assert saved == [10]
        running.stop()


def test_a_resumed_service_ends_where_an_unbroken_one_does(
    tmp_path: Path, blobs: Any, states_equal: Any
) -> None:
    X, y = blobs(n=150)
    lines = csv_lines(X, y)
    with CheckpointStore(tmp_path / "runs.db") as store:
        loop = Prequential(model())
        session = Session(
            store, store.create_run("svc", loop.model.config(), "tcp://x"), loop, "tcp://x"
        )
        with serving(loop) as running:
            Client(running.server).ask(*lines[:90])
            running.stop(session.save())
        resumed, ck = load_loop(store, store.run("svc"))
        assert ck.samples == 90
        with serving(resumed) as running:
            Client(running.server).ask(*lines[90:])
            running.stop()
    unbroken = Prequential(model())
    with serving(unbroken) as running:
        Client(running.server).ask(*lines)
        running.stop()
    assert resumed.samples == 150
    assert states_equal(resumed.model.state_dict(), unbroken.model.state_dict())
    assert resumed.metrics.summary() == unbroken.metrics.summary()


def test_a_predict_service_learns_nothing(blobs: Any) -> None:
    X, y = blobs(n=50)
    trained = Prequential(model())
    for row, k in zip(X, y, strict=True):
        trained.step(row, k)
    before = trained.model.state_dict()
    loop = Prequential(trained.model, learn=False)
    with serving(loop, learn=False) as running:
        client = Client(running.server)
        replies = client.ask(
            *csv_lines(X[:20], y[:20]), '{"id": 1, "y": 0}', '{"control": "checkpoint"}'
        )
        running.stop()
    assert all(r["learned"] is False for r in replies[:20])
    assert sum(r["label"] == k for r, k in zip(replies, y[:20], strict=False)) >= 18
    assert "only predicts" in replies[20]["error"] and "no checkpoints" in replies[21]["error"]
    assert states_equal_arrays(before, trained.model.state_dict())


def test_a_predict_service_rate_counts_busy_time_not_idle_time(blobs: Any) -> None:
    """``samples_per_s`` in a metrics reply is per second spent on requests: the time the
    service sat waiting for clients is in ``elapsed_s`` and not in the rate."""
    X, y = blobs(n=50)
    trained = Prequential(model())
    for row, k in zip(X, y, strict=True):
        trained.step(row, k)
    loop = Prequential(trained.model, learn=False)
    with serving(loop, learn=False) as running:
        client = Client(running.server)
        client.ask(*[line.rsplit(",", 1)[0] for line in csv_lines(X[:40], y[:40])])
        (first,) = client.ask('{"control": "metrics"}')
        time.sleep(0.6)  # idle: no request waits
        (second,) = client.ask('{"control": "metrics"}')
        running.stop()
    assert first["samples"] == second["samples"] == 40
    for m in (first, second):
        assert m["samples_per_s"] == pytest.approx(40 / m["busy_s"])
        assert 0 < m["busy_s"] < m["elapsed_s"]
    assert second["elapsed_s"] - first["elapsed_s"] >= 0.6
    assert second["busy_s"] - first["busy_s"] < 0.3  # the idle 0.6 s is not busy time
    assert second["samples_per_s"] > 40 / second["elapsed_s"]


def states_equal_arrays(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(np.array_equal(v, b[k]) for k, v in a.items() if isinstance(v, np.ndarray))


# ---------------------------------------------------------------- the client, the parser


def test_send_pipelines_lines_and_returns_replies_in_order(blobs: Any) -> None:
    X, y = blobs(n=300)
    loop = Prequential(model())
    got: list[bytes] = []
    with serving(loop) as running:
        host, port = running.server.address
        lines = [line.encode() for line in csv_lines(X, y)] + [b"", b"   ", b"1,x,3"]
        result = send(host, port, lines, got.append, window=8)
        running.stop()
    assert (result.sent, result.answered, result.errors) == (301, 301, 1)  # blanks: no reply
    assert [json.loads(r).get("learned") for r in got[:300]] == [False] + [True] * 299  # held
    assert loop.samples == loop.learned == 300
    assert f" line {len(lines)}: " in json.loads(got[-1])["error"]  # the blank lines count


def test_error_line_numbers_count_blank_lines_as_the_file_does(blobs: Any) -> None:
    """``send`` passes blank lines on (unanswered), so the service's line numbers are the
    file's: a bad record on the file's line 6, after two blank lines, is reported at line 6."""
    X, y = blobs(n=3)
    good = csv_lines(X, y)
    bad = "oops," + good[0].split(",", 1)[1]
    lines = [good[0], "", good[1], "  ", good[2], bad, "", "\r"]
    got: list[bytes] = []
    loop = Prequential(model())
    with serving(loop) as running:
        host, port = running.server.address
        result = send(host, port, [f"{line}\n".encode() for line in lines], got.append)
        raw = Client(running.server)  # a raw client's blank lines count the same way
        raw.send(b"\n\n" + good[0].encode() + b"\n\n1,2,x")
        learned, reply = raw.replies(2)
        running.stop()
    assert (result.sent, result.answered, result.errors) == (4, 4, 1)
    error = json.loads(got[3])["error"]
    assert " line 6: field 1 is 'oops', not a number" in error, error
    assert learned["learned"] is True and " line 5: " in reply["error"], reply


def test_send_says_how_to_start_a_service_when_none_listens() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(SourceError, match=r"cannot connect: .*is a service listening\? start one"):
        send("127.0.0.1", port, [b"1,2,3"], lambda _: None)


def test_listening_on_a_busy_port_names_the_fix() -> None:
    with LineServer("127.0.0.1", 0) as first:
        with pytest.raises(SourceError, match="cannot listen: .*pick another port, or 0"):
            LineServer("127.0.0.1", first.address[1])


@pytest.mark.parametrize(
    ("url", "host", "expected"),
    [("tcp://127.0.0.1:9099", None, ("127.0.0.1", 9099)), ("tcp://:0", None, ("127.0.0.1", 0)),
     ("tcp://127.0.0.1:9099", "0.0.0.0", ("0.0.0.0", 9099)), ("tcp://[::1]:80", None, ("::1", 80))],
)  # fmt: skip
def test_parse_url(url: str, host: str | None, expected: tuple[str, int]) -> None:
    assert parse_url(url, host) == expected


@pytest.mark.parametrize(
    "url", ["tcp://", "tcp://host", "tcp://h:port", "tcp://h:70000", "udp://h:1"]
)
def test_parse_url_refuses_what_is_not_an_address(url: str) -> None:
    with pytest.raises(SourceError, match="write tcp://HOST:PORT"):
        parse_url(url)


def test_the_parser_reads_lines_as_stdin_does() -> None:
    parser = LineParser()
    assert parser.parse(b"a,b,label", 0, "w") == HeaderLine(3)
    sample = parser.parse(b"1,2,cat", 1, "w line 2")
    assert not isinstance(sample, (HeaderLine, Control, LateLabel, SourceError))
    assert sample.y == "cat" and sample.x.tolist() == [1.0, 2.0] and sample.where == "w line 2"
    assert parser.parse(b"a,b,label", 2, "w") == HeaderLine(3)  # another client's header
    assert parser.parse(b"1,2,", 3, "w").y is None  # type: ignore[union-attr]
    assert parser.parse(b'{"control": "metrics"}', 4, "w") == Control("metrics")
    assert parser.parse(b'{"id": 3, "y": true}', 5, "w") == LateLabel("3", True)
    flat = parser.parse(b'{"f": 1, "g": 2, "y": 0, "id": 9}', 6, "w")
    assert flat.id == "9" and flat.y == 0  # type: ignore[union-attr]
    assert "a late label needs an id and a label" in str(parser.parse(b'{"id": 3}', 7, "w"))
    tsv = LineParser(label_column="0")
    assert tsv.parse(b"k	1	2", 0, "w").y == "k"  # type: ignore[union-attr]


def test_lines_one_field_short_are_unlabelled_as_predict_reads_them() -> None:
    """Two clients of one service: one sends labelled CSV, the other the same without labels."""
    parser = LineParser()
    labelled = parser.parse(b"1,2,3,UP", 0, "w")
    unlabelled = parser.parse(b"1,2,3", 1, "w")
    assert labelled.y == "UP" and unlabelled.y is None  # type: ignore[union-attr]
    assert unlabelled.x.tolist() == labelled.x.tolist() == [1, 2, 3]  # type: ignore[union-attr]
    assert "2 fields, expected 4" in str(parser.parse(b"1,2", 2, "w"))
    trained = LineParser(n_features=3)  # a saved model's width: the first line is unlabelled
    assert trained.parse(b"1,2,3", 0, "w").y is None  # type: ignore[union-attr]
    assert trained.parse(b"1,2,3,DOWN", 1, "w").y == "DOWN"  # type: ignore[union-attr]


LINE = st.one_of(
    st.binary(max_size=80).map(lambda b: b.replace(b"\n", b"")),
    st.lists(
        st.sampled_from(["1", "-2.5", "", "x", "nan", "1e400", '"a,b"', "{", "}"]), max_size=6
    ).map(lambda f: ",".join(f).encode()),  # fmt: skip
    st.dictionaries(
        st.sampled_from(["x", "y", "id", "control", "f", "label"]),
        st.one_of(
            st.none(),
            st.integers(),
            st.floats(),
            st.text(max_size=5),
            st.lists(st.floats(), max_size=3),
        ),
        max_size=4,
    ).map(lambda d: json.dumps(d).encode()),  # fmt: skip
)


@settings(max_examples=150, deadline=None)
@given(lines=st.lists(LINE, min_size=1, max_size=6))
def test_any_line_parses_or_is_a_record_error_never_a_crash(lines: list[bytes]) -> None:
    parser = LineParser()
    for i, raw in enumerate(lines):
        parsed = parser.parse(raw, i, f"client t line {i + 1}")
        if isinstance(parsed, SourceError):
            assert str(parsed).startswith(f"client t line {i + 1}: ")
        elif not isinstance(parsed, (Control, LateLabel, HeaderLine)):
            assert parsed.x.dtype == np.float32 and np.isfinite(parsed.x).all()


def test_garbage_on_the_socket_is_answered_and_the_service_goes_on(blobs: Any) -> None:
    X, y = blobs(n=20)
    good = csv_lines(X, y)
    rng = np.random.default_rng(0)
    garbage = [bytes(rng.integers(0, 256, size=int(n)).tolist()) for n in rng.integers(1, 300, 30)]
    lines = [g.replace(b"\n", b"") for g in garbage]
    lines = [g for g in lines if g.strip()]  # blank ones get no reply
    loop = Prequential(model())
    with serving(loop, max_line=200) as running:
        client = Client(running.server)
        client.ask(*good[:10])
        replies = client.ask(*lines)
        after = client.ask(*good[10:])
        running.stop()
    assert all("error" in r or "learned" in r for r in replies)
    assert all(r["learned"] is True for r in after)
    assert loop.samples == 20 + sum("learned" in r for r in replies)


# ---------------------------------------------------------------- the layout


def test_a_trained_models_width_is_the_layout_from_the_first_line(blobs: Any) -> None:
    """A resumed service holds nothing: the model's width is its layout, so a stray first line
    is refused at once and fixes nothing (before, it fixed the CSV reader's width for all)."""
    X, y = blobs(n=40)
    trained = Prequential(model())
    for row, k in zip(X[:20], y[:20], strict=True):
        trained.step(row, k)
    with serving(trained) as running:
        client = Client(running.server)
        stray, *rest = client.ask("1,2", *csv_lines(X[20:], y[20:]))
        running.stop()
    assert stray["error"].endswith(
        "line 1: 2 fields, expected 7 (the layout of the trained model: 6 features, then the "
        "label; send one record of that layout per line)"
    )
    assert all(r["learned"] is True and "held" not in r for r in rest)
    assert trained.samples == 40 and trained.rejected == 1


def test_a_given_layout_must_be_the_trained_models() -> None:
    trained = Prequential(model())
    trained.step(np.zeros(6, dtype=np.float32), 0)
    with LineServer("127.0.0.1", 0) as server, pytest.raises(ConfigError) as caught:
        Service(trained, server, layout=Layout(features=5))
    assert str(caught.value) == (
        "the layout given: 5 features, then the label, but the run's model reads 6 features "
        "(a trained model keeps its width: give its layout, or none)"
    )


def test_lines_held_when_a_limit_ends_the_service_are_refused_not_learned(blobs: Any) -> None:
    """Held lines are refused (counted, on_bad) when the service stops before any layout is
    confirmed; with ``confirm=3`` two lines of one width are not enough."""
    X, y = blobs(n=2)
    loop = Prequential(model())
    refused: list[str] = []

    def bad(err: Any) -> None:
        refused.append(str(err))
        loop.reject(err.index, err.where)

    with serving(loop, confirm=3, on_bad=bad) as running:
        client = Client(running.server)
        replies = client.ask(*csv_lines(X, y))
        running.stop()
    assert [r["held"] for r in replies] == [True, True]
    assert loop.samples == 0 and loop.rejected == 2 and loop.model.n_features is None
    why = "the service stopped before a layout was confirmed (3 lines of one width confirm it"
    assert len(refused) == 2 and all(why in r for r in refused)


def test_a_stray_first_line_is_held_then_refused_and_the_model_is_the_good_lines(
    blobs: Any,
) -> None:
    """``1,2`` first from one client, then proper lines from another: the stray line is held,
    the proper ones confirm their layout, and the model ends bit-identical to one that learned
    only the proper lines (the held one of them learned first, as it came)."""
    X, y = blobs(n=60)
    good = csv_lines(X, y)
    loop = Prequential(model())
    with serving(loop) as running:
        stray_client, client = Client(running.server), Client(running.server)
        (stray,) = stray_client.ask("1,2")
        replies = client.ask(*good)
        running.stop()
    assert stray["held"] is True and stray["learned"] is False
    assert replies[0]["held"] is True and all(r["learned"] is True for r in replies[1:])
    assert loop.model.n_features == 6 and loop.samples == loop.learned == 60
    assert loop.rejected == 1 and running.service.counts.errors == 1
    reference, parser = Prequential(model()), LineParser()
    for i, line in enumerate(good):  # the lines as sent (6 significant digits)
        sample = parser.parse(line.encode(), i, "")
        assert isinstance(sample, Sample)
        reference.step(sample.x, sample.y)
    assert loop.metrics.reported.accuracy == reference.metrics.reported.accuracy
    assert states_equal_arrays(reference.model.state_dict(), loop.model.state_dict())


# ---------------------------------------------------------------- endpoints (issue 12)


def test_layout_of_is_none_unless_told_and_keeps_the_label() -> None:
    assert layout_of(None, None) is None
    assert layout_of(3, None) == Layout(3, None, labelled=True)
    assert layout_of(None, ("a", "b", "y")).features == 2
    assert layout_of(None, ("a", "b"), label_column="none").features == 2
    with pytest.raises(ConfigError, match="features=5 disagrees with the 3 columns a, b, y"):
        layout_of(5, ("a", "b", "y"))


def test_listen_opens_a_line_server_and_says_where() -> None:
    notes: list[str] = []
    server = listen("tcp://127.0.0.1:0", host=None, max_line=64, log=notes.append)
    try:
        assert isinstance(server, LineServer)
        assert notes == [f"listening on {server.url}"] and server.url.startswith("tcp://127.0.0.1:")
    finally:
        server.close()
    with pytest.raises(ConfigError, match=r"^`fmt` does not apply to tcp://"):
        listen("tcp://127.0.0.1:0", fmt="csv", log=notes.append)
    with pytest.raises(ConfigError, match=r"^`fmt` does not apply to mqtt://"):
        listen("mqtt://127.0.0.1/t", fmt="csv", log=notes.append)
    with pytest.raises(ConfigError, match=r"^`publish` goes with mqtt://"):
        listen("tcp://127.0.0.1:0", publish="out", log=notes.append)
    assert len(notes) == 1  # nothing opened for a refusal


def test_listen_on_mqtt_names_its_broker_in_the_url() -> None:
    pytest.importorskip("paho.mqtt")
    with pytest.raises(ConfigError, match=r"^`host` is for tcp://"):
        listen("mqtt://127.0.0.1/t", host="0.0.0.0")


def test_send_file_streams_a_gzip_file_and_writes_the_replies_in_order(
    blobs: Any, tmp_path: Path
) -> None:
    X, y = blobs(n=30)
    path = tmp_path / "l.csv.gz"
    path.write_bytes(gzip.compress(("\n".join(csv_lines(X, y)) + "\n").encode()))
    out = io.BytesIO()
    with serving(Prequential(model())) as running:
        result = send_file(running.server.url, str(path), out)
        running.stop()
    replies = [json.loads(r) for r in out.getvalue().splitlines()]
    assert (result.sent, result.answered, result.errors) == (30, 30, 0)
    assert [r["learned"] for r in replies] == [False] + [True] * 29  # one reply a line, in order
    assert replies[0]["label"] is None and not any("error" in r for r in replies)
    with pytest.raises(SourceError, match="none.csv: no such file"):
        send_file("tcp://127.0.0.1:9", str(tmp_path / "none.csv"), out)
