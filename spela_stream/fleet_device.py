"""A fleet device's side of a round: its learner keeps learning while the fleet merges.

``DeviceLink`` listens on 127.0.0.1 for its ClientApp (started by the SuperNode for each of
the server's messages). A message carries the fleet's model and which update of each device it
took in (``contributions``); the learner, at a sample boundary (``wrap`` the stream), answers:

- its update was taken in: ``rebase`` on the fleet's model (its learning since that update
  stays), and the update it sends is its change since then, counted in ``learned``;
- new to the fleet (never taken in): it sends its own state, ``fresh``, every sample it learned;
- resumed from a checkpoint by a process that has not been in a round yet: it takes the fleet's
  model as it is (``adopt``; what it learned since its last round is not merged) and sends 0.

``per_round`` paces a device (for benchmarks), in lockstep with the fleet: after that many
samples it waits (up to ``hold`` seconds) for the next round, takes the fleet's model it brings,
learns its next quota from it and only then answers (an answer sent at once would carry a
quota learned on the device's own model of the round before: measured on the class-skewed
split, held-out 0.684 that way against 0.800 in lockstep in process). No round within ``hold``:
it learns its next quota alone, then waits again. After its stream ends a device still answers
rounds until the server's last message (``final``) or ``linger`` seconds.

The fleet's server gone: a device that was in the fleet and finds nothing listening at its
``superlink`` for ``patience`` seconds (probed once a second while it waits) counts the server
gone (``gone``): a paced device stops waiting for rounds and learns on alone (the next round
that comes, from a server run again, puts it back in lockstep: what it learned alone goes with
its next update), and a device whose stream has ended stops lingering and ends without the last
merge. A server ends its SuperLink only after it sent its ``final``, so a device that missed
that message (its SuperNode, which takes one message at a time, still busy with a late answer
when the server ended; a server killed after its last round) ends ``patience`` seconds after
the server, not after a ``hold`` for each sample it had left, or ``linger``.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .fleet import adopt, rebase, shared_keys
from .fleet_wire import FleetError, pack, recv_frame, send_frame, split_state, unpack
from .model import SpelaMLP
from .prequential import Prequential

T = TypeVar("T")


@dataclass
class _Sent:
    seq: int
    state: dict[str, Any]
    learned: int  # the loop's learned count when it was sent


@dataclass
class _Ask:
    blob: bytes
    done: threading.Event = field(default_factory=threading.Event)
    answer: bytes = b""


class DeviceLink:
    """The learner's end of a device: a socket for its ClientApp, and the round logic."""

    def __init__(
        self,
        loop: Prequential,
        name: str,
        *,
        resumed: bool = False,
        per_round: int | None = None,
        hold: float = 120.0,
        linger: float = 600.0,
        answer_within: float = 120.0,
        superlink: str | None = None,
        patience: float = 60.0,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.loop = loop
        self.name = name
        self.per_round = per_round
        self.hold = hold
        self.linger = linger
        self.answer_within = answer_within
        self.superlink = superlink  # HOST:PORT, probed while waiting (None: never gone)
        self.patience = patience
        self._log = log or (lambda message: None)
        self.rounds = 0  # rounds this device answered
        self.final = False
        self.gone = False  # its SuperLink did not listen for ``patience`` seconds
        self._seen = False  # it was in the fleet (its SuperLink listened, or a round came)
        self._silent_since: float | None = None
        self._probed = -1.0
        self._alone = False  # paced, the server gone: learning on until a round comes
        self.bytes_in = self.bytes_out = 0
        self._resumed = resumed
        self._seq = 0
        self._pending: _Sent | None = None
        self._held: _Ask | None = None  # paced: a round answered once its quota is learned
        self._fresh = False
        self._ref: dict[str, Any] | None = None
        self._from = loop.learned
        self._since_round = 0
        self._asks: queue.Queue[_Ask] = queue.Queue()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.address = f"127.0.0.1:{self._sock.getsockname()[1]}"
        self._closed = threading.Event()
        self._delivered = threading.Event()  # the answer to the server's last message left
        self._thread = threading.Thread(target=self._accept, name=f"fleet-{name}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the socket side

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(self.answer_within)
                ask = _Ask(recv_frame(conn))
                self._asks.put(ask)
                if ask.done.wait(self.answer_within):
                    send_frame(conn, ask.answer)
                    if self.final:  # the answer to the last message: once the ClientApp has
                        conn.recv(1)  # it (it closes), its SuperNode has it to send on
                        self._delivered.set()
            except (OSError, FleetError):
                return  # the ClientApp went; the round goes on without this device

    def settle(self, timeout: float = 10.0, relay: float = 5.0) -> bool:
        """After the server's last message: wait (up to ``timeout`` seconds) until its answer
        reached the ClientApp, then ``relay`` seconds for the SuperNode to send it on (it polls
        for replies every 0.5 s) and the ServerApp to take it (every 0.25 s): a SuperNode
        stopped with the answer in hand loses it. Whether it was delivered."""
        if not self.final:
            return False
        delivered = self._delivered.wait(timeout)
        if delivered:
            time.sleep(relay)
        return delivered

    def close(self) -> None:
        """Stop listening."""
        self._closed.set()
        self._sock.close()
        self._thread.join(timeout=2)

    # ------------------------------------------------------------------ the learner side

    def wrap(self, stream: Iterable[T]) -> Iterator[T | None]:
        """``stream`` with the fleet's rounds answered between samples; after it ends, ``None``
        (a live stream waiting) until the server's last message, ``linger`` seconds, or the
        server gone (``gone``)."""
        for item in stream:
            if self.per_round is None or self._alone:
                self.answer()
            elif self._since_round >= self.per_round:  # paced: a round takes its quota
                if self._held is not None:  # learned from the model the round brought
                    self._reply_held()
                until = time.monotonic() + self.hold
                while self._since_round >= self.per_round and not self.final:
                    if self.answer(wait=0.2):
                        continue
                    if self._server_gone():  # no round will come: learn on alone
                        self._log(f"device {self.name!r}: learning on alone until a round "
                                  "comes")  # fmt: skip
                        self._alone = True
                        break
                    if time.monotonic() >= until:  # none within hold: a quota alone
                        self._log(f"device {self.name!r}: no round in {self.hold:g} s; "
                                  f"learning its next {self.per_round} samples alone")  # fmt: skip
                        self._since_round = 0
                        break
                    yield None  # the loop checks signals and timed checkpoints
            self._since_round += 1
            yield item
        if self._held is not None:  # the stream ended within the round's quota
            self._reply_held()
        until = time.monotonic() + self.linger
        while not self.final and time.monotonic() < until:
            self.answer(wait=0.2)
            if not self.final and self._server_gone():
                self._log(f"device {self.name!r}: its stream has ended and the fleet's "
                          "server is gone; ending without the fleet's last merge")  # fmt: skip
                return
            yield None

    def _server_gone(self) -> bool:
        """Whether the fleet's SuperLink, once seen, has not listened for ``patience`` seconds
        (probed at most once a second); a SuperLink that listens again clears it."""
        if self.superlink is None:
            return False
        now = time.monotonic()
        if now - self._probed < 1.0:
            return self.gone
        self._probed = now
        if listens(self.superlink):
            if self.gone:
                self._log(f"device {self.name!r}: the fleet's SuperLink at {self.superlink} "
                          "listens again")  # fmt: skip
            self._seen, self._silent_since, self.gone = True, None, False
        elif self._seen:
            if self._silent_since is None:
                self._silent_since = now
            if not self.gone and now - self._silent_since >= self.patience:
                self.gone = True
                self._log(f"device {self.name!r}: nothing has listened at the fleet's "
                          f"SuperLink {self.superlink} for {self.patience:g} s: the server "
                          "is gone")  # fmt: skip
        return self.gone

    def answer(self, wait: float = 0.0) -> bool:
        """Answer the rounds waiting (up to ``wait`` seconds for one); whether any was."""
        answered = False
        while True:
            try:
                ask = self._asks.get(timeout=wait) if wait > 0 and not answered else (
                    self._asks.get_nowait())  # fmt: skip
            except queue.Empty:
                return answered
            if self._held is not None:  # a new round before the quota: answer the old one
                self._reply_held()
            self._seen, self._silent_since = True, None  # a round: the fleet is there
            self._alone = self.gone = False
            try:
                took = self._take(ask.blob)
                if took and self.per_round is not None and not self.final:
                    self._held, self._since_round = ask, 0  # learn the quota from it first
                    return True
                ask.answer = self._reply()
            except BaseException:
                ask.done.set()
                raise
            ask.done.set()
            answered = True

    def _reply_held(self) -> None:
        ask, self._held = self._held, None
        assert ask is not None
        try:
            ask.answer = self._reply()
        finally:
            ask.done.set()

    def _round(self, blob: bytes) -> bytes:
        """One round at a sample boundary. ``_ref`` is what the device's state sits on (the
        fleet's model it last took, or its own update that the fleet took in since): its
        state is ``_ref`` plus what the fleet has not got yet, learned since ``_from``. An
        update the fleet never took in (its round lost) leaves ``_ref`` and ``_from`` as they
        were: the next update carries that learning too."""
        self._take(blob)
        return self._reply()

    def _take(self, blob: bytes) -> bool:
        """The fleet's model a round brings, taken at a sample boundary (``_round``'s first
        half); whether it changed the device's model."""
        arrays, meta = unpack(blob)
        self.bytes_in += len(blob)
        self.final = self.final or bool(meta.get("final"))
        took = False
        own = self.loop.model.state_dict()
        pending, self._pending = self._pending, None
        if pending is not None and meta.get("contributions", {}).get(self.name) == pending.seq:
            self._ref, self._from = pending.state, pending.learned
        fresh = self._ref is None
        if arrays and own.get("n_features") is not None:
            fleet = {**arrays, "labels": meta["labels"]}
            if self._ref is not None:
                own = rebase(own, self._ref, fleet)
            elif self._resumed:  # its state holds an older fleet model: take this one
                own = adopt(own, fleet)
                self._from, fresh = self.loop.learned, False
            if self._ref is not None or self._resumed:
                # what it learned and the fleet has not got is its change since this model: if
                # the update it sends now is lost (the ServerApp or SuperLink went before it
                # merged), the next round rebases from here and keeps that change
                self._ref = {k: fleet[k] for k in shared_keys(fleet)}
                self._resumed = False
                self.loop.model = SpelaMLP.from_state(own)
                took = True
        self._fresh = fresh
        return took

    def _reply(self) -> bytes:
        """The device's update (``_round``'s second half): its state now, and what it learned
        since the update the fleet last took in."""
        own = self.loop.model.state_dict()
        fresh = self._fresh
        self._seq += 1
        sent = {k: own[k] for k in shared_keys(own)}
        self._pending = _Sent(self._seq, sent, self.loop.learned)
        self.rounds += 1  # paced: the next quota waits for the next round's model (``_take``)
        _, rest = split_state(own)
        answer = pack(sent, {
            "device": self.name, "seq": self._seq, "learned": self.loop.learned - self._from,
            "fresh": fresh, "labels": rest.get("labels", []), "config": rest.get("config", {}),
            "samples": self.loop.samples, "correct": correct(self.loop),
        })  # fmt: skip
        self.bytes_out += len(answer)
        return answer


def listens(address: str, timeout: float = 1.0) -> bool:
    """Whether something accepts a TCP connection at ``address`` (HOST:PORT) now."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def correct(loop: Prequential) -> int:
    """How many of the loop's scored predictions were right (its prequential accuracy x n)."""
    report = loop.report()
    return round(report.accuracy * report.scored)
