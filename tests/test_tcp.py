"""The line server's wake-up protocol, and a well-behaved client's latency under socket abuse.

Real sockets on 127.0.0.1 throughout. Timing assertions only test what cannot flake: a reply
never waits for the I/O thread's 1 s ``select`` timeout (the lost wake-up made every reply do so).
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from spela_stream.sources import tcp
from spela_stream.sources.tcp import LineServer, Request

TIMEOUT = 20.0  # the generous bound on anything that should take milliseconds
SELECT_TIMEOUT = 0.9  # a reply this late waited on the I/O thread's 1 s select timeout


class _HookedReader:
    """The wake-up pipe's reading end, with a hook run once inside its next ``recv``: the
    moment the I/O thread is draining the pipe, where the lost wake-up happened."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.hook: Callable[[], None] | None = None
        self.fired = threading.Event()

    def recv(self, n: int) -> bytes:
        hook, self.hook = self.hook, None
        if hook is not None:
            hook()
            self.fired.set()
        return self.sock.recv(n)

    def fileno(self) -> int:
        return self.sock.fileno()

    def setblocking(self, flag: bool) -> None:
        self.sock.setblocking(flag)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def hooked(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LineServer, _HookedReader]]:
    """A LineServer whose wake-up reader is hooked (the real socketpair, wrapped)."""
    real = socket.socketpair
    readers: list[_HookedReader] = []

    def pair() -> tuple[Any, socket.socket]:
        r, w = real()
        readers.append(_HookedReader(r))
        return readers[-1], w

    monkeypatch.setattr(tcp.socket, "socketpair", pair)
    server = LineServer("127.0.0.1", 0)
    monkeypatch.setattr(tcp.socket, "socketpair", real)
    try:
        yield server, readers[0]
    finally:
        server.close()


def _take(server: LineServer, n: int) -> list[Request]:
    return [server.requests.get(timeout=TIMEOUT) for _ in range(n)]


def _read_line(fh: Any) -> bytes:
    line: bytes = fh.readline()
    assert line.endswith(b"\n"), "the server closed the connection"
    return line


def test_a_wake_up_sent_while_the_pipe_is_drained_is_not_lost(
    hooked: tuple[LineServer, _HookedReader],
) -> None:
    """Reply while the I/O thread drains the wake-up pipe: every later reply still goes at once
    (the bug: the flag stayed set with no byte in the pipe, so each waited ~1 s, for good)."""
    server, reader = hooked
    with socket.create_connection(server.address, timeout=TIMEOUT) as client:
        fh = client.makefile("rb")
        client.sendall(b"a\nb\n")
        a, b = _take(server, 2)
        reader.hook = lambda: server.reply(b, "B")  # the model answers inside the window
        server.reply(a, "A")
        assert reader.fired.wait(TIMEOUT)
        assert _read_line(fh) == b"A\n"
        assert _read_line(fh) == b"B\n"
        waits = []
        for i in range(4):
            client.sendall(b"%d\n" % i)
            (request,) = _take(server, 1)
            start = time.monotonic()
            server.reply(request, "ok")
            assert _read_line(fh) == b"ok\n"
            waits.append(time.monotonic() - start)
        assert max(waits) < SELECT_TIMEOUT, f"replies waited for the select timeout: {waits}"


def test_many_wake_ups_from_two_threads_are_each_delivered_promptly() -> None:
    """Two answering threads, thousands of wake-ups: no reply waits for the timeout."""
    with LineServer("127.0.0.1", 0) as server:
        stop = threading.Event()

        def answer() -> None:
            while not stop.is_set():
                with contextlib.suppress(queue.Empty):
                    request = server.requests.get(timeout=0.05)
                    server.reply(request, request.raw.decode())

        answerers = [threading.Thread(target=answer, daemon=True) for _ in range(2)]
        for t in answerers:
            t.start()
        try:
            with socket.create_connection(server.address, timeout=TIMEOUT) as client:
                fh = client.makefile("rb")
                worst = 0.0
                for i in range(2000):
                    start = time.monotonic()
                    client.sendall(b"%d\n" % i)
                    assert _read_line(fh) == b"%d\n" % i
                    worst = max(worst, time.monotonic() - start)
                assert worst < SELECT_TIMEOUT, f"a reply waited {worst:.3f} s"
        finally:
            stop.set()
            for t in answerers:
                t.join(TIMEOUT)


# ---------------------------------------------------------------- abuse


def _churn(address: tuple[str, int], n: int) -> None:
    """Connect and close ``n`` times; every fourth sends a garbage line first and leaves
    without reading its reply (a reset for the server)."""
    for i in range(n):
        with socket.create_connection(address, timeout=TIMEOUT) as sock:
            if i % 4 == 0:
                sock.sendall(b"\xff\xfe\x00garbage,,\x1b[2J\n")


def _garbage(address: tuple[str, int], n: int) -> None:
    """Lines of junk, an overlong one among them, answered and read."""
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        fh = sock.makefile("rb")
        for i in range(n):
            sock.sendall(bytes(range(256)).replace(b"\n", b"") + b"%d\n" % i)
            fh.readline()
        sock.sendall(b"x" * 10_000 + b"\n")  # over max_line
        fh.readline()


def _half_closed(address: tuple[str, int], held: list[socket.socket]) -> None:
    """Send a line, shut the write side, never read."""
    for _ in range(20):
        sock = socket.create_connection(address, timeout=TIMEOUT)
        sock.sendall(b"bye\n")
        sock.shutdown(socket.SHUT_WR)
        held.append(sock)


def _never_reading(address: tuple[str, int], held: list[socket.socket]) -> None:
    """Send a burst of lines and never read a reply (the server pauses them, bounded)."""
    for _ in range(5):
        sock = socket.create_connection(address, timeout=TIMEOUT)
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            for _ in range(200):
                sock.send(b"1,2,3,4\n" * 100)
        held.append(sock)


def test_a_well_behaved_client_never_waits_for_the_timeout_under_abuse() -> None:
    """2,000 connect/close, garbage, half-closed and never-reading clients at once: the client
    sending one line at a time gets every reply, none waiting for the select timeout."""
    with LineServer("127.0.0.1", 0, max_line=4096) as server:
        stop = threading.Event()
        answered = [0]

        def answer() -> None:  # the model's thread: echo, or the problem
            while not stop.is_set():
                with contextlib.suppress(queue.Empty):
                    request = server.requests.get(timeout=0.05)
                    server.reply(request, request.problem or str(len(request.raw)))
                    answered[0] += 1

        held: list[socket.socket] = []
        address = server.address
        threads = [threading.Thread(target=answer, daemon=True)] + [
            threading.Thread(target=f, args=a, daemon=True)
            for f, a in [
                (_churn, (address, 2000)),
                (_garbage, (address, 300)),
                (_half_closed, (address, held)),
                (_never_reading, (address, held)),
            ]
        ]
        for t in threads:
            t.start()
        try:
            with socket.create_connection(address, timeout=TIMEOUT) as client:
                fh = client.makefile("rb")
                waits: list[float] = []
                # at least 200 requests, and on while the abusers run (bounded: 20,000)
                while len(waits) < 200 or (
                    any(t.is_alive() for t in threads[1:]) and len(waits) < 20_000
                ):
                    start = time.monotonic()
                    client.sendall(b"0.5,1.5\n")
                    assert _read_line(fh) == b"7\n"
                    waits.append(time.monotonic() - start)
            for t in threads[1:]:
                t.join(TIMEOUT)
                assert not t.is_alive(), "an abuser did not finish"
            assert max(waits) < SELECT_TIMEOUT, f"a reply waited {max(waits):.3f} s"
            assert server.alive
            assert server.stats.clients_total >= 2000 + 1 + 20 + 5 + 1
            assert server.stats.overlong == 1
        finally:
            stop.set()
            for sock in held:
                sock.close()
            threads[0].join(TIMEOUT)
