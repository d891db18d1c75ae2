"""A well-behaved client's reply latency, quiet and under socket abuse (issue 12, defect 3).

    python -m benchmarks.abuse_bench            # 1,000 quiet requests, then abuse (~1 minute)
    python -m benchmarks.abuse_bench --quick    # 300 quiet requests

Three processes, so that no two share a GIL: a service (``Service`` over a ``LineServer`` on
127.0.0.1, a ``SpelaMLP(hidden=(64,))``, 1 torch thread), an abuser, and this one, the client
that sends one 4-feature labelled line at a time and waits for its reply. Latency is from the
send to the reply. The abuser makes 2,000 connect/close (every fourth sends a garbage line and
leaves without reading: a reset), one client of 500 junk lines and an overlong one, 20 that
send a line, half-close and never read, and 5 that send 2,000 lines each and never read a reply.
Prints the medians and p99s, quiet and abused, and their ratio; the issue asks for a median
within 2x of quiet. Timings depend on the machine's load: the figures say which it was.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import time

import numpy as np

TIMEOUT = 60.0
LINE = b"0.25,-1.5,3,0.125,a\n"


def serve() -> None:
    """The service process: print the port, serve until a shutdown control line."""
    import torch

    from spela_stream.model import SpelaMLP
    from spela_stream.prequential import Prequential
    from spela_stream.service import Service
    from spela_stream.sources.tcp import LineServer

    torch.set_num_threads(1)
    server = LineServer("127.0.0.1", 0, max_line=4096)
    service = Service(Prequential(SpelaMLP(hidden=(64,), seed=0)), server)
    print(server.address[1], flush=True)
    for _ in service.run():
        pass
    service.close()


ABUSES = ("churn", "garbage", "half_closed", "never_reading")


def abuse(port: int, kinds: tuple[str, ...] = ABUSES) -> None:
    """The abuser process: the ``kinds`` of abuse at once, then wait for the burst clients to
    be served."""
    import threading

    address = ("127.0.0.1", port)
    held: list[socket.socket] = []

    def churn() -> None:
        for i in range(2000):
            with socket.create_connection(address, timeout=TIMEOUT) as sock:
                if i % 4 == 0:
                    sock.sendall(b"\xff\xfe\x00garbage,,\x1b[2J\n")

    def garbage() -> None:
        with socket.create_connection(address, timeout=TIMEOUT) as sock:
            fh = sock.makefile("rb")
            for i in range(500):
                sock.sendall(bytes(range(256)).replace(b"\n", b"") + b"%d\n" % i)
                fh.readline()
            sock.sendall(b"x" * 10_000 + b"\n")
            fh.readline()

    def half_closed() -> None:
        for _ in range(20):
            sock = socket.create_connection(address, timeout=TIMEOUT)
            sock.sendall(b"1,2,3,4,b\n")
            sock.shutdown(socket.SHUT_WR)
            held.append(sock)

    def never_reading() -> None:
        for _ in range(5):
            sock = socket.create_connection(address, timeout=TIMEOUT)
            sock.sendall(b"1,2,3,4,b\n" * 2000)
            held.append(sock)

    chosen = {"churn": churn, "garbage": garbage, "half_closed": half_closed,
              "never_reading": never_reading}  # fmt: skip
    threads = [threading.Thread(target=chosen[k]) for k in kinds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for sock in held:
        sock.close()


def measure(
    fh: object, sock: socket.socket, n: int, until: subprocess.Popen[bytes] | None
) -> list[float]:
    """Send one line at a time: ``n`` of them, and on while ``until`` runs (at most 100,000)."""
    waits: list[float] = []
    while len(waits) < n or (until is not None and until.poll() is None and len(waits) < 100_000):
        start = time.perf_counter()
        sock.sendall(LINE)
        reply = fh.readline()  # type: ignore[attr-defined]
        waits.append(time.perf_counter() - start)
        if not reply.startswith(b"{"):
            raise SystemExit(f"bad reply {reply[:80]!r}")
    return waits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--abuse", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--kinds", default=",".join(ABUSES), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        return serve()
    if args.abuse:
        return abuse(args.abuse, tuple(args.kinds.split(",")))
    me = [sys.executable, "-m", "benchmarks.abuse_bench"]
    service = subprocess.Popen([*me, "--serve"], stdout=subprocess.PIPE)
    assert service.stdout is not None
    port = int(service.stdout.readline())
    n = 300 if args.quick else 1000
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        fh = sock.makefile("rb")
        measure(fh, sock, 50, None)  # warm up: the model is built on the first line
        quiet = measure(fh, sock, n, None)
        abuser = subprocess.Popen([*me, "--abuse", str(port)])
        abused = measure(fh, sock, n, abuser)
        abuser.wait(TIMEOUT)
        after = measure(fh, sock, n, None)
        sock.sendall(b'{"control": "shutdown"}\n')
        fh.readline()
    with contextlib.suppress(subprocess.TimeoutExpired):
        service.wait(TIMEOUT)
    load = os.getloadavg()[0]
    print(f"load average at the end: {load:.2f} (timings on a loaded machine are rough)")
    print(f"{'phase':<8} {'requests':>8} {'median ms':>10} {'p99 ms':>8} {'max ms':>8}")
    for name, w in (("quiet", quiet), ("abused", abused), ("after", after)):
        a = np.array(w) * 1e3
        print(
            f"{name:<8} {a.size:>8} {np.median(a):>10.3f} {np.percentile(a, 99):>8.3f} "
            f"{a.max():>8.1f}"
        )
    ratio = float(np.median(abused) / np.median(quiet))
    print(f"abused / quiet median: {ratio:.2f}x (the goal: within 2x)")


if __name__ == "__main__":
    main()
