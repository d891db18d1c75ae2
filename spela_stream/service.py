"""The learning service: lines from many socket clients -> the prequential loop -> one reply each.

A ``LineServer`` (``sources.tcp``) does the socket I/O on its own thread and hands complete lines
over through a bounded queue; this module runs on the one thread that owns the model. It parses
each line with the stdin readers (``sources.records``), drives ``Prequential.run`` (the only
place that sequences predict, score, learn and checkpoint), and answers every line on its own
connection, in order, with the prediction made *before* learning from it:

    {"label": 7, "confidence": 0.93, "layer": 1, "learned": true}         a sample (+ "id")
    {"id": "17", "label": 3, "confidence": 0.8, "layer": 1, "correct": true, "learned": true}
                                                                           a late label
    {"error": "client 127.0.0.1:50312 line 3: field 785 is 'x', not a number (...)"}
    {"control": "checkpoint", "checkpoint": 12, "samples": 5000}          control lines

Delayed labels: an unlabelled JSON sample with an ``id`` is predicted and kept (features and
prediction) among at most ``pending`` others, the oldest dropped and counted; a later
``{"id": ..., "y": ...}`` learns the kept features and scores the prediction made back then.

>>> import json, socket
>>> from spela_stream.model import SpelaMLP
>>> from spela_stream.prequential import Prequential
>>> from spela_stream.sources.tcp import LineServer
>>> server = LineServer("127.0.0.1", 0)
>>> service = Service(Prequential(SpelaMLP(hidden=(16,), seed=0)), server)
>>> client = socket.create_connection(server.address)
>>> client.sendall(b"1,0,a\\n0,1,b\\n1,0,a\\n" + b'{"control": "shutdown"}\\n')
>>> reports = list(service.run())
>>> service.close()
>>> replies = [json.loads(r) for r in client.makefile().read().splitlines()]
>>> [r.get("label") for r in replies[:3]], replies[3]["control"], reports[-1].samples
([None, 'a', 'a'], 'shutdown', 3)
"""

from __future__ import annotations

import json
import queue
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from .errors import ConfigError, InputError, SourceError
from .model import Prediction
from .prequential import CheckpointPolicy, Delayed, Prequential, Report, StopGuard
from .sources.base import BadRecordError, Sample
from .sources.delimited import is_no_label
from .sources.endpoint import Endpoint, LineRequest
from .sources.layout import CONFIRM, HELD_MAX, Held, Layout
from .sources.records import Control, HeaderLine, LateLabel, LineParser
from .sources.tcp import MAX_LINE, PENDING, LineServer, parse_url
from .sources.textio import decode_lossy

MQTT = "mqtt://"
TICK_S = 0.2  # how often a quiet service looks at signals and the checkpoint clock
FLUSH_EVERY = 32  # replies per wake-up of the I/O thread while requests keep coming


@dataclass
class ServiceCounts:
    """What the service has answered, besides what the loop counts."""

    answered: int = 0
    errors: int = 0  # bad lines, refused samples, unknown late labels: each got an error reply
    pending_dropped: int = 0  # the oldest unlabelled samples pushed out by --pending
    pending_replaced: int = 0  # an id sent again before its label: the older one is forgotten
    unknown_labels: int = 0  # late labels for no pending id


class _Stop:
    """The shutdown control line's signal to end the run."""


_STOP = _Stop()
Step = tuple[LineRequest, Sample | Delayed | _Stop, bool]  # (request, item, answered already)


class Service:
    """Serve ``loop`` to the clients of ``server``: test-then-train per line, replies in order.

    ``learn=False`` (or a loop made with ``learn=False``) only predicts: labels are not used and
    there are no checkpoints. ``on_bad`` takes every bad line; the default counts it
    (``loop.reject``); a Run's ``rejects`` (``spela_stream.rejects``) also logs and keeps it.
    """

    def __init__(
        self,
        loop: Prequential,
        server: Endpoint,
        *,
        learn: bool = True,
        pending: int = PENDING,
        label_column: str | None = None,
        header: bool | None = None,
        tick: float = TICK_S,
        on_bad: Callable[[BadRecordError], None] | None = None,
        layout: Layout | None = None,
        confirm: int = CONFIRM,
    ) -> None:
        if pending < 1:
            raise SourceError(f"pending must be at least 1, got {pending}")
        self.loop = loop
        self.server = server
        self.learn = learn and loop.learn
        width = loop.model.n_features
        if layout is not None and width is not None and layout.features != width:
            raise ConfigError(
                f"{layout.describe()}, but the run's model reads {width} features (a trained "
                "model keeps its width: give its layout, or none)"
            )
        if layout is None and width is not None:
            layout = Layout(width, labelled=not is_no_label(label_column),
                            origin="of the trained model")  # fmt: skip
        self._label_column, self._header, self._confirm = label_column, header, confirm
        self.parser = LineParser(label_column=label_column, header=header, layout=layout)
        # no layout given or trained: lines are held until ``confirm`` agree (sources.layout)
        self.held: Held[LineRequest] | None = Held(confirm) if layout is None else None
        self.pending: OrderedDict[str, tuple[np.ndarray, Prediction, str]] = OrderedDict()
        self.pending_limit = pending
        self.counts = ServiceCounts()
        self.tick = tick
        self.on_bad = on_bad or (lambda err: loop.reject(err.index, err.where))
        self.shutdown_requested = False
        self._index = loop.position  # lines taken, so positions go on counting after a resume
        self._current: LineRequest | None = None
        self._shutdown: LineRequest | None = None
        self._checkpoint: CheckpointPolicy | None = None
        self._guard: StopGuard | None = None
        self._unflushed = 0  # replies handed to the server but not yet flushed
        self._answered = False  # the request being handled was answered already (held)
        self._busy_s = 0.0  # time spent on requests (not waiting for them), for samples_per_s
        self._started = time.perf_counter()
        self._served_from = loop.samples  # the loop's count when this service began

    # ------------------------------------------------------------------ running

    def run(
        self,
        *,
        every: int = 1000,
        doubling: bool = False,
        limit: int | None = None,
        checkpoint: CheckpointPolicy | None = None,
        guard: StopGuard | None = None,
    ) -> Iterator[Report]:
        """Serve until a shutdown control line, ``limit`` samples or a signal (``Interrupted``),
        yielding the loop's reports; ``checkpoint`` also answers ``{"control": "checkpoint"}``.
        The caller writes the final checkpoint, then calls ``close``."""
        self._checkpoint = checkpoint if self.learn else None
        self._guard = guard
        self._busy_s, self._started, self._served_from = 0.0, time.perf_counter(), self.loop.samples
        try:
            yield from self.loop.run(
                self._items(), every=every, doubling=doubling, limit=limit,
                checkpoint=self._checkpoint, guard=guard, on_step=self._answer,
                on_error=self._refuse,
            )  # fmt: skip
        finally:  # a limit or a signal: lines still held are refused, before the checkpoint
            self._refuse_held("the service stopped")

    def close(self, checkpoint: int | None = None) -> None:
        """Answer a shutdown line (with the final ``checkpoint`` id), then close every socket."""
        if self._shutdown is not None:
            reply = {"control": "shutdown", "samples": self.loop.samples, "checkpoint": checkpoint}
            self._send(self._shutdown, reply)
            self._shutdown = None
        self.server.close()

    def _items(self) -> Iterator[Sample | Delayed | None]:
        """What the loop steps through: samples, settled late labels, and None while quiet."""
        requests = self.server.requests
        while True:
            # replies go out in batches while requests wait, at once when the queue runs dry
            if self._unflushed >= FLUSH_EVERY or (self._unflushed and requests.empty()):
                self.server.flush()
                self._unflushed = 0
            try:
                request = requests.get(timeout=self.tick)
            except queue.Empty:
                if not self.server.alive:
                    raise SourceError(
                        f"{self.server.url}: the socket thread stopped ({self.server.error!r})"
                    ) from None
                yield None  # a moment for signals and the checkpoint clock
                continue
            began = time.perf_counter()
            for current, item, answered in self._take(request):
                if item is _STOP:
                    self._refuse_held("the service stopped")
                    return
                self._current, self._answered = current, answered
                yield item  # type: ignore[misc]
            self._answered = False
            self._busy_s += time.perf_counter() - began  # parse, step, reply (and a checkpoint)

    # ------------------------------------------------------------------ one request

    def _take(self, request: LineRequest) -> list[Step]:
        """A request as what the loop steps through: (request, item, answered already), none
        when it was answered here, several when it confirms the layout held lines wait for."""
        index = self._index
        self._index += 1
        if request.problem is not None:
            err = BadRecordError(request.where, request.problem, index=index, raw=None)
            self._bad(request, err)
            return []
        if self.held is not None:
            return self._hold(request, index)
        item = self._parse(request, index)
        return [] if item is None else [(request, item, False)]

    def _hold(self, request: LineRequest, index: int) -> list[Step]:
        """No layout yet: a sample or header line waits, answered ``held``, until ``confirm``
        samples of one width agree; then every held line is read under that layout."""
        assert self.held is not None
        fresh = LineParser(label_column=self._label_column, header=self._header).parse(
            request.raw, index, request.where
        )
        if not isinstance(fresh, Sample | HeaderLine):  # controls, late labels, errors: now
            item = self._parse(request, index)
            return [] if item is None else [(request, item, False)]
        width = self.held.hold(request, index, fresh if isinstance(fresh, Sample) else None)
        if width is None:
            if isinstance(fresh, Sample):  # what the model, empty still, would answer
                p = self.loop.model.predict_explain_one(fresh.x)
                row = {"label": p.label, "confidence": p.confidence, "layer": p.layer}
                ident = {"id": fresh.id} if fresh.id is not None else {}
                self._send(request, {**ident, **row, "learned": False, "held": True})
            else:
                self._send(request, {"header": True, "columns": fresh.columns, "held": True})
            for late, i in self.held.overflow():
                why = f"held past {HELD_MAX} lines while no layout was confirmed"
                self._refuse_one(late, i, why)
            return []
        labelled = not is_no_label(self._label_column)
        layout = Layout(width, labelled=labelled, origin="confirmed by the first lines")
        self.parser = LineParser(label_column=self._label_column, header=self._header,
                                 layout=layout)  # fmt: skip
        lines, self.held = self.held.release(), None
        out: list[Step] = []
        for line, i in lines:  # the last is this request, not yet answered
            self._answered = line is not request  # the others' reply ("held") went out
            item = self._parse(line, i)
            if item is not None:
                out.append((line, item, self._answered))
        self._answered = False
        return out

    def _refuse_held(self, why: str) -> None:
        """Lines still held when the service stops are refused: no layout, nothing learned."""
        if self.held is not None:
            for request, i in self.held.release():
                self._refuse_one(request, i, f"{why} before a layout was confirmed")

    def _refuse_one(self, request: LineRequest, index: int, why: str) -> None:
        problem = (
            f"{why} ({self._confirm} lines of one width confirm it, or start the "
            "service with its layout), so it was not learned"
        )
        err = BadRecordError(request.where, problem, index=index, raw=decode_lossy(request.raw))
        self.counts.errors += 1
        self.on_bad(err)  # its reply ("held") went out

    def _parse(self, request: LineRequest, index: int) -> Sample | Delayed | _Stop | None:
        """A parsed line for the loop, or None when it was answered here."""
        parsed = self.parser.parse(request.raw, index, request.where)
        if isinstance(parsed, Sample):
            return parsed if self.learn else replace(parsed, y=None)
        if isinstance(parsed, BadRecordError):
            self._bad(request, parsed)
        elif isinstance(parsed, LateLabel):
            return self._late(request, parsed)
        elif isinstance(parsed, Control):
            return self._control(request, parsed.name)
        elif isinstance(parsed, HeaderLine):
            self._send(request, {"header": True, "columns": parsed.columns})
        return None

    def _answer(self, item: Sample | Delayed, p: Prediction) -> None:
        """The loop made prediction ``p`` for ``item`` (and learned from it if labelled)."""
        request = self._current
        assert request is not None
        row: dict[str, Any] = {"label": p.label, "confidence": round(p.confidence, 6)}
        row["layer"] = p.layer
        if isinstance(item, Delayed):
            row = {"id": item.id, **row, "correct": p.label == item.y}
            row["learned"] = self.learn
        else:
            row["learned"] = self.learn and item.y is not None
            if item.id is not None:
                row["id"] = item.id
                if item.y is None and self.learn:
                    self._keep(item, p)
                    row["pending"] = True
        self._send(request, row)

    def _refuse(self, item: Sample | Delayed, exc: InputError) -> None:
        """The model refused a sample (its width, say): answer with the error, count it."""
        request = self._current
        assert request is not None
        where = item.where or request.where
        problem = str(exc).removeprefix(f"{where}: ")
        if isinstance(item, Sample):
            err = BadRecordError(where, problem, index=item.index, raw=decode_lossy(request.raw))
            self._bad(request, err)
        else:
            self.counts.errors += 1
            self._send(request, {"error": f"{request.where}: {problem}"})

    def _bad(self, request: LineRequest, err: BadRecordError) -> None:
        self.counts.errors += 1
        self.on_bad(err)
        self._send(request, {"error": str(err)})

    def _send(self, request: LineRequest, row: dict[str, Any]) -> None:
        if self._answered:  # a held line read once its layout was confirmed: answered before
            return
        self.counts.answered += 1
        self._unflushed += 1
        self.server.reply(request, json.dumps(row), flush=False)

    # ------------------------------------------------------------------ late labels

    def _keep(self, sample: Sample, p: Prediction) -> None:
        assert sample.id is not None
        if self.pending.pop(sample.id, None) is not None:
            self.counts.pending_replaced += 1
        elif len(self.pending) >= self.pending_limit:
            self.pending.popitem(last=False)
            self.counts.pending_dropped += 1
        self.pending[sample.id] = (sample.x, p, sample.where)

    def _late(self, request: LineRequest, late: LateLabel) -> Delayed | None:
        if not self.learn:
            self._error(request, "this service only predicts (started by predict), so it keeps "
                        "no samples for late labels; send labels to a learn service")  # fmt: skip
            return None
        kept = self.pending.pop(late.id, None)
        if kept is None:
            self.counts.unknown_labels += 1
            self._error(
                request,
                f"no sample with id {late.id!r} is waiting for a label (send the sample first, "
                f"unlabelled and with that id; each is labelled once, and only the newest "
                f"{self.pending_limit} are kept: raise --pending to keep more)",
            )
            return None
        x, p, where = kept
        return Delayed(x, late.y, p, where=f"{request.where} (the label of {where})", id=late.id)

    def _error(self, request: LineRequest, problem: str) -> None:
        self.counts.errors += 1
        self._send(request, {"error": f"{request.where}: {problem}"})

    # ------------------------------------------------------------------ control lines

    def _control(self, request: LineRequest, name: str) -> _Stop | None:
        if name == "shutdown":
            self._shutdown = request
            self.shutdown_requested = True
            return _STOP
        if name == "metrics":
            self._send(request, {"control": "metrics", **self.metrics()})
            return None
        if self._checkpoint is None:
            self._error(request, "this service has no checkpoints (a predict service, or one "
                        "started without a store); nothing to save")  # fmt: skip
            return None
        guard = self._guard
        with guard.busy() if guard is not None else nullcontext():  # a signal waits for it
            saved = self._checkpoint(self.loop)
        reply = {"control": "checkpoint", "checkpoint": saved, "samples": self.loop.samples}
        self._send(request, reply)
        if guard is not None:
            guard.check()
        return None

    def metrics(self) -> dict[str, Any]:
        """The loop's figures, the service's counts and the socket's, as one JSON-able dict."""
        r = self.loop.report()
        served = r.samples - self._served_from
        return {
            "samples": r.samples,
            "learned": r.learned,
            "rejected": r.rejected,
            "scored": r.scored,
            "accuracy": r.accuracy,
            "rolling_accuracy": r.rolling_accuracy,
            "kappa": r.kappa,
            "layer_accuracy": list(r.layer_accuracy),
            "drifts": r.drifts,
            # per second of work on requests: idle time, waiting for clients, is not counted
            "samples_per_s": served / self._busy_s if self._busy_s > 0 else 0.0,
            "busy_s": self._busy_s,
            "elapsed_s": time.perf_counter() - self._started,
            "pending": len(self.pending),
            **asdict(self.counts),
            **asdict(self.server.stats),
        }


def layout_of(
    features: int | None, columns: tuple[str, ...] | None, label_column: str | None = None
) -> Layout | None:
    """The layout a service is told up front: ``features`` wide and/or named by ``columns``,
    labelled unless ``label_column`` is ``none``; None when neither is given (the first lines
    of one width fix it)."""
    if features is None and columns is None:
        return None
    return Layout(features, columns, labelled=not is_no_label(label_column))


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def listen(
    source: str,
    *,
    fmt: str | None = None,
    host: str | None = None,
    max_line: int = MAX_LINE,
    publish: str | None = None,
    log: Callable[[str], None] = _stderr,
) -> Endpoint:
    """The endpoint ``source`` names, open: a ``LineServer`` for ``tcp://HOST:PORT`` (``host``
    overriding the URL's), or an MQTT subscription for ``mqtt://HOST:PORT/TOPIC`` answering on
    topic ``publish`` (paho-mqtt loads only then). ``log`` hears where it listens, for clients."""
    mqtt = source.startswith(MQTT)
    if fmt is not None:
        kind = "mqtt://" if mqtt else "tcp://"
        raise ConfigError(f"`fmt` does not apply to {kind} (a line starting with {{ is JSON)")
    if not mqtt:
        if publish is not None:
            raise ConfigError("`publish` goes with mqtt:// (tcp:// replies to each client)")
        server = LineServer(*parse_url(source, host), max_line=max_line)
        log(f"listening on {server.url}")
        return server
    from .sources import mqtt as mq

    if host is not None:
        raise ConfigError("`host` is for tcp://; an mqtt:// source names its broker in the URL")
    broker, port, topic = mq.parse_url(source)
    # a fresh client id per process: a second learner of the same run must not take over the
    # first one's connection (MQTT drops the older client of an id) before its lease says no
    bridge = mq.MqttBridge(broker, port, topic, publish=publish, max_line=max_line)
    answers = f", answering on {publish}" if publish else ""
    log(f"subscribed to {bridge.url}{answers}")
    return bridge
