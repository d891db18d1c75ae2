"""A line server on a TCP socket: many clients, one request per line, one reply per request.

All socket I/O runs on one thread (a ``selectors`` loop, non-blocking sockets), off the thread
that owns the model. Complete lines become ``Request``s in one **bounded** queue, which the
model's thread drains; its replies come back through ``reply`` and are written on the I/O
thread, in request order per connection (the queue is FIFO and each connection's lines enter it
in order).

Backpressure is per client: a connection with ``window`` requests unanswered, or with replies
piling up unread, stops being read until it catches up, so its kernel buffers fill and its
sender blocks; a full queue likewise pauses reading (the lines wait in the connection's buffer).
Memory per client is bounded by ``max_line``, one read chunk and the window. A silent client
costs a socket and nothing else; one that disconnects mid-line loses only that partial line.
A line over ``max_line`` bytes becomes an error request (answered in order like any other) and
the rest of it is skipped up to its newline. Blank lines are skipped and get no reply.

>>> with LineServer("127.0.0.1", 0) as server:
...     import socket
...     with socket.create_connection(server.address) as client:
...         client.sendall(b"1,2,3\\n")
...         request = server.requests.get(timeout=10)
...         server.reply(request, '{"ok": true}')
...         client.recv(100)
b'{"ok": true}\\n'
>>> request.raw, request.line
(b'1,2,3', 1)
"""

from __future__ import annotations

import contextlib
import errno
import queue
import select
import selectors
import socket
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from types import TracebackType

from ..errors import SourceError

SCHEME = "tcp://"
MAX_LINE = 1 << 20  # bytes; an MNIST CSV line is ~2 KiB, a JSON one ~4 KiB
WINDOW = 256  # requests in flight per client before it stops being read
QUEUE = 1024  # requests waiting for the model, all clients together
FAIR_SHARE = 16  # lines one client may queue per turn while others wait
CHUNK = 1 << 16
OUT_LIMIT = 1 << 20  # reply bytes waiting for a client that does not read them
CLOSE_GRACE_S = 2.0  # how long close() waits to deliver the last replies
PENDING = 10_000  # unlabelled samples a service keeps for their late labels (~3 KiB each, MNIST)


def parse_url(url: str, host: str | None = None) -> tuple[str, int]:
    """``tcp://HOST:PORT`` (or ``tcp://:PORT``) as (host, port); ``host`` overrides the URL's,
    and 127.0.0.1 is the default, so nothing listens beyond this machine unless asked.

    >>> parse_url("tcp://127.0.0.1:9099"), parse_url("tcp://:0", "0.0.0.0")
    (('127.0.0.1', 9099), ('0.0.0.0', 0))
    """
    rest = url[len(SCHEME) :] if url.startswith(SCHEME) else None
    name, sep, port_text = (rest or "").rpartition(":")
    if rest is None or not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise SourceError(
            f"{url}: not a socket address; write tcp://HOST:PORT, like tcp://127.0.0.1:9099 "
            "(port 0 picks a free one)"
        )
    name = name.strip("[]")  # [::1]:9099
    return host or name or "127.0.0.1", int(port_text)


def url_of(address: tuple[str, int]) -> str:
    """``tcp://HOST:PORT`` for a bound address (IPv6 hosts in brackets)."""
    host, port = address[0], address[1]
    return f"{SCHEME}[{host}]:{port}" if ":" in host else f"{SCHEME}{host}:{port}"


@dataclass(eq=False)
class Client:
    """One connection's state; only the I/O thread touches it, bar the counters it reads."""

    sock: socket.socket
    name: str  # "127.0.0.1:50312"
    buf: bytearray = field(default_factory=bytearray)
    start: int = 0  # first unconsumed byte of buf
    scan: int = 0  # buf[start:scan] holds no newline
    line: int = 0  # physical lines seen, for positions
    in_flight: int = 0  # requests queued or being answered
    out: bytearray = field(default_factory=bytearray)
    eof: bool = False
    skipping: bool = False  # inside an overlong line, discarding up to its newline
    closed: bool = False
    events: int = 0  # what the selector watches for now


@dataclass(frozen=True, slots=True)
class Request:
    """One line from a client: ``raw`` without its newline, or ``problem`` for a line that could
    not be taken (too long). ``where`` reads ``client 127.0.0.1:50312 line 7``."""

    client: Client
    line: int
    raw: bytes
    where: str
    problem: str | None = None


@dataclass
class ServerStats:
    """What the I/O thread has seen (read by the model's thread for a metrics reply)."""

    clients: int = 0  # connected now
    clients_total: int = 0
    lines: int = 0  # requests handed to the queue
    overlong: int = 0
    partial_dropped: int = 0  # a client left mid-line
    replies_dropped: int = 0  # a client left before its replies were written


class LineServer:
    """Listen on ``host:port`` (port 0: a free one, see ``address``) and serve lines as requests.

    ``requests`` is the bounded queue the model's thread reads; ``reply(request, text)`` answers
    one (from any thread). ``close()`` delivers what replies it can, then closes every socket.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_line: int = MAX_LINE,
        window: int = WINDOW,
        queue_size: int = QUEUE,
    ) -> None:
        if max_line < 1 or window < 1 or queue_size < 1:
            raise SourceError("max_line, window and queue_size must be at least 1")
        self.max_line = max_line
        self.window = window
        self.requests: queue.Queue[Request] = queue.Queue(queue_size)
        self.stats = ServerStats()
        self.error: BaseException | None = None  # what stopped the I/O thread, if not close()
        try:
            self._listener = socket.create_server(
                (host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET, backlog=128
            )
        except OSError as exc:
            hint = (
                "is another service listening there? pick another port, or 0 for a free one"
                if exc.errno == errno.EADDRINUSE
                else "check --host and the port"
            )
            raise SourceError(
                f"{url_of((host, port))}: cannot listen: {exc.strerror or exc} ({hint})"
            ) from None
        self._listener.setblocking(False)
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._wake_pending = False  # a wake-up byte is in the pipe, or about to be
        self._wake_lock = threading.Lock()  # the flag's test-and-set, against the I/O's clear
        self._outbox: deque[tuple[Client, bytes]] = deque()
        self._stopping = False
        self._clients: set[Client] = set()
        # clients with complete lines held back by a full queue, in turn order (round robin)
        self._waiting: OrderedDict[Client, None] = OrderedDict()
        self._sel = selectors.DefaultSelector()
        self._thread = threading.Thread(target=self._serve, name="spela-tcp-io", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """Where this server listens, as ``tcp://HOST:PORT`` (the real port for port 0)."""
        return url_of(self.address)

    @property
    def alive(self) -> bool:
        """False once the I/O thread has stopped (closed, or failed: see ``error``)."""
        return self._thread.is_alive()

    # ------------------------------------------------------------------ the model's side

    def reply(self, request: Request, text: str, *, flush: bool = True) -> None:
        """Answer ``request`` with one line of text (thread-safe; written on the I/O thread).

        ``flush=False`` leaves the reply for the next ``flush()``: waking the I/O thread costs
        a thread switch, so a busy caller wakes it once per batch of replies."""
        self._outbox.append((request.client, text.encode("utf-8") + b"\n"))
        if flush:
            self._wake()

    def flush(self) -> None:
        """Have the I/O thread write the replies given so far."""
        if self._outbox:
            self._wake()

    def _wake(self) -> None:
        """Ring the I/O thread once per batch: the reply is already in the outbox, so either the
        I/O thread has not yet cleared the flag (and will read the outbox after clearing it),
        or it has, and this call finds the flag clear and sends a byte."""
        with self._wake_lock:
            if self._wake_pending:
                return
            self._wake_pending = True
            # full buffer: a wake is pending anyway; closed: the I/O thread has finished
            with contextlib.suppress(OSError):
                self._wake_w.send(b"\0")

    def close(self) -> None:
        """Deliver the replies given so far (for up to a couple of seconds), close every socket."""
        if self._stopping:
            return
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        self._thread.join(CLOSE_GRACE_S + 5.0)
        self._wake_w.close()

    def __enter__(self) -> LineServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ the I/O thread

    def _serve(self) -> None:
        sel = self._sel
        sel.register(self._listener, selectors.EVENT_READ, None)
        sel.register(self._wake_r, selectors.EVENT_READ, None)
        try:
            while not self._stopping:
                for key, mask in sel.select(timeout=1.0):
                    if key.fileobj is self._listener:
                        self._accept()
                    elif key.fileobj is self._wake_r:
                        self._drain_wake()
                    else:
                        client = key.data
                        if mask & selectors.EVENT_READ:
                            self._read(client)
                        if mask & selectors.EVENT_WRITE and not client.closed:
                            self._send(client)
                self._deliver()
                while self._waiting and not self.requests.full():
                    client = next(iter(self._waiting))
                    del self._waiting[client]
                    self._take_lines(client)
                    self._watch(client)
        except BaseException as exc:  # a bug here must not leave the model's thread waiting
            self.error = exc
            raise
        finally:
            self._finish()

    def _accept(self) -> None:
        while True:
            try:
                sock, addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of file descriptors, or the peer reset before accept
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a reply goes at once
            client = Client(sock, url_of(addr[:2])[len(SCHEME) :])
            self._clients.add(client)
            self.stats.clients += 1
            self.stats.clients_total += 1
            self._watch(client)

    def _drain_wake(self) -> None:
        """Empty the wake-up pipe, *then* clear the flag; the outbox is read after this (in
        ``_deliver``). Clearing first lost wake-ups: a byte sent between the clear and the drain
        was swallowed with the flag left set, so no later reply rang and each waited for the
        select timeout, for good. In this order a byte that arrives after the drain stays in the
        pipe (an extra wake at worst), and a reply whose wake saw the flag still set is in the
        outbox before the clear, so the ``_deliver`` that follows takes it."""
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while self._wake_r.recv(4096):
                pass
        with self._wake_lock:
            self._wake_pending = False

    def _read(self, client: Client) -> None:
        try:
            data = client.sock.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # reset by the peer
            self._drop(client)
            return
        if not data:
            client.eof = True
            if client.start < len(client.buf) and not client.skipping:
                self.stats.partial_dropped += 1  # a line cut off by the disconnect
            client.buf.clear()
            client.start = client.scan = 0
        else:
            client.buf += data
            self._offer(client)
        self._watch(client)

    def _offer(self, client: Client) -> None:
        """Take the client's lines now, or behind the clients already waiting for the queue."""
        if not self._waiting:
            self._take_lines(client)
        elif client not in self._waiting:
            self._waiting[client] = None

    def _take_lines(self, client: Client) -> None:
        """Queue the complete lines in the client's buffer while its window and the queue allow,
        at most ``FAIR_SHARE`` per turn, so that no client starves the others."""
        buf = client.buf
        taken = 0
        while client.in_flight < self.window and not client.closed:
            if self.requests.full() or taken == FAIR_SHARE:  # only this thread puts, so "not
                self._waiting[client] = None  # full" means the put will succeed
                if taken == 0:  # its turn is not over: it goes first when room comes
                    self._waiting.move_to_end(client, last=False)
                break
            nl = buf.find(b"\n", client.scan)
            if nl < 0:
                client.scan = len(buf)
                if client.skipping:
                    client.start = client.scan = len(buf)
                elif len(buf) - client.start > self.max_line:
                    client.line += 1
                    self._overlong(client)
                    taken += 1
                    client.skipping = True
                    client.start = client.scan = len(buf)
                break
            line = bytes(buf[client.start : nl])
            client.start = client.scan = nl + 1
            if client.skipping:
                client.skipping = False  # the rest of the overlong line, already answered
                continue
            client.line += 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line or line.isspace():
                continue
            if len(line) > self.max_line:
                self._overlong(client)
                taken += 1
                continue
            where = f"client {client.name} line {client.line}"
            self._put(Request(client, client.line, line, where))
            taken += 1
        if client.start > CHUNK or client.start == len(buf):  # compact now and then
            del buf[: client.start]
            client.scan -= client.start
            client.start = 0

    def _overlong(self, client: Client) -> None:
        self.stats.overlong += 1
        where = f"client {client.name} line {client.line}"
        problem = (
            f"line longer than {self.max_line} bytes, skipped to its newline (send one record per "
            "line; raise --max-line for wider records)"
        )
        self._put(Request(client, client.line, b"", where, problem))

    def _put(self, request: Request) -> None:
        request.client.in_flight += 1
        self.stats.lines += 1
        self.requests.put_nowait(request)

    def _deliver(self) -> None:
        """Move the replies given since the last look into their clients' output buffers."""
        touched: set[Client] = set()
        while self._outbox:
            client, data = self._outbox.popleft()
            client.in_flight -= 1
            if client.closed:
                self.stats.replies_dropped += 1
                continue
            client.out += data
            touched.add(client)
        for client in touched:
            self._send(client)
            if not client.closed:
                self._offer(client)  # room in its window again
                self._watch(client)

    def _send(self, client: Client) -> None:
        try:
            sent = client.sock.send(client.out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:  # the client went away: its replies have nowhere to go
            self._drop(client)
            return
        del client.out[:sent]
        self._watch(client)

    def _watch(self, client: Client) -> None:
        """Register what the client needs: reading while it has room, writing while replies wait;
        close it once it has said goodbye and has its answers."""
        if client.closed:
            return
        if client.eof and client.in_flight == 0 and not client.out:
            self._drop(client)
            return
        room = client.in_flight < self.window and len(client.out) < OUT_LIMIT
        want = 0
        if room and not client.eof and client not in self._waiting:
            want |= selectors.EVENT_READ
        if client.out:
            want |= selectors.EVENT_WRITE
        if want == client.events:
            return
        if client.events == 0:
            self._sel.register(client.sock, want, client)
        elif want == 0:
            self._sel.unregister(client.sock)
        else:
            self._sel.modify(client.sock, want, client)
        client.events = want

    def _drop(self, client: Client) -> None:
        if client.closed:
            return
        client.closed = True
        if client.events:
            self._sel.unregister(client.sock)
            client.events = 0
        client.sock.close()
        self._clients.discard(client)
        self._waiting.pop(client, None)
        self.stats.clients -= 1

    def _finish(self) -> None:
        """On close: write what replies there are (briefly), then close everything."""
        self._deliver()
        deadline = time.monotonic() + CLOSE_GRACE_S
        pending = [c for c in self._clients if c.out and not c.closed]
        while pending and time.monotonic() < deadline:
            socks = {c.sock: c for c in pending}
            _, ready, _ = select.select([], list(socks), [], max(deadline - time.monotonic(), 0))
            for sock in ready:
                self._send(socks[sock])
            pending = [c for c in pending if c.out and not c.closed]
        for client in list(self._clients):
            self._drop(client)
        self._sel.close()
        self._listener.close()
        self._wake_r.close()
