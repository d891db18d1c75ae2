"""The client side of the socket service: stream lines to it, hand back its replies in order.

Lines are pipelined: up to ``window`` go out before the first reply is waited for, so a client
runs at the service's pace, not at one round trip per line. A writer thread sends, the caller's
thread reads; when every line is sent the socket is half-closed, and the service closes it once
it has answered them all.
"""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .errors import SourceError
from .sources.tcp import WINDOW, parse_url, url_of
from .sources.textio import open_binary, text_lines
from .stopping import StopGuard

CONNECT_TIMEOUT_S = 10.0


@dataclass
class SendResult:
    """How a ``send`` went: lines sent, replies read, and how many of those were errors."""

    sent: int = 0
    answered: int = 0
    errors: int = 0


def connect(host: str, port: int, timeout: float = CONNECT_TIMEOUT_S) -> socket.socket:
    """A connected socket to a service, or a SourceError that says how to start one."""
    url = url_of((host, port))
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise SourceError(
            f"{url}: cannot connect: {exc.strerror or exc} (is a service listening? start one "
            f"with spela-stream learn --source {url})"
        ) from None
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def send(
    host: str,
    port: int,
    lines: Iterable[bytes],
    on_reply: Callable[[bytes], None],
    *,
    window: int = WINDOW,
) -> SendResult:
    """Send each line of ``lines`` (with or without its newline) to the service at
    ``host:port``; call ``on_reply`` with each reply line, in order (blank lines get none, but
    they are sent, so the line numbers in the service's errors are those of ``lines``). Raises
    SourceError if the service cannot be reached or closes before answering every line."""
    if window < 1:
        raise SourceError(f"window must be at least 1, got {window}")
    sock = connect(host, port)
    result = SendResult()
    room = threading.Semaphore(window)
    failure: list[BaseException] = []

    def write() -> None:
        try:
            it = iter(lines)
            while True:
                room.acquire()  # before taking the line, so a timestamp taken there is the send's
                blank = []  # sent too, unanswered: the service counts them, so its line numbers
                line = None  # are the file's
                for raw in it:
                    if raw.strip():
                        line = raw
                        break
                    blank.append(b"\n")
                if blank:
                    sock.sendall(b"".join(blank))
                if line is None:
                    break
                sock.sendall(line if line.endswith(b"\n") else line + b"\n")
                result.sent += 1
            sock.shutdown(socket.SHUT_WR)  # no more lines: the service closes after its replies
        except OSError as exc:  # the service went away; the reader sees the connection end
            failure.append(exc)
        except BaseException as exc:  # the input failed (a SourceError reading the file)
            failure.append(exc)
            sock.shutdown(socket.SHUT_RDWR)

    writer = threading.Thread(target=write, name="spela-send", daemon=True)
    writer.start()
    url = url_of((host, port))
    try:
        with sock.makefile("rb") as replies:
            for reply in replies:
                result.answered += 1
                if reply.startswith(b'{"error"'):
                    result.errors += 1
                on_reply(reply)
                room.release()
    except OSError as exc:
        raise SourceError(
            f"{url}: connection lost after {result.answered} replies: {exc}"
        ) from None
    finally:
        writer.join(1.0)
        sock.close()
    if failure and not isinstance(failure[0], OSError):
        raise failure[0]
    if result.answered < result.sent or failure:
        raise SourceError(
            f"{url}: the service closed the connection after {result.answered} of "
            f"{result.sent} replies (was it shut down or interrupted?)"
        )
    return result


def send_file(to: str, path: str, out: BinaryIO, *, window: int = WINDOW) -> SendResult:
    """Stream the lines of the file ``path`` (``-``: stdin; gzip too) to the service at ``to``
    (``tcp://HOST:PORT``) with ``send``, writing its replies to ``out`` in order; from stdin
    each is flushed as it comes (a pipe's reader wants each answer as its question arrives)."""
    host, port = parse_url(to)
    if path == "-":
        lines = text_lines(sys.stdin.buffer, "<stdin>", [])
    else:
        handle = open_binary(Path(path), path)
        lines = text_lines(handle, path, [handle])
    flush = path == "-"

    def write(reply: bytes) -> None:
        out.write(reply)
        if flush:
            out.flush()

    with StopGuard():
        try:
            return send(host, port, (raw for _, raw in lines), write, window=window)
        finally:
            lines.close()
            out.flush()
