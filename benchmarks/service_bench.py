"""Throughput and reply latency of the TCP service, against ``learn`` on the same lines from a file.

    python -m benchmarks.service_bench           # 10,000 MNIST lines, best of 2 (~3 minutes)
    python -m benchmarks.service_bench --quick   # 2,000 lines, once (stdout only, ~1 minute)

Each scenario starts a real ``spela-stream learn --source tcp://127.0.0.1:0`` process (default
``SpelaMLP()``, 784-1024-1024, 1 torch thread, checkpoint only at the end) and streams MNIST
test-set lines (784 integer pixels, then the label, as CSV) over loopback with
``spela_stream.client.send``: 1 client, 8 concurrent clients (the lines split between them),
each pipelining up to 256 lines; then 1 and 8 clients with one line in flight each (devices that
wait for each answer: the round trip alone). Throughput is samples
answered per second, first send to last reply; latency is per request, from the moment the
client hands a line to the socket to the moment its reply arrives (median and p99). With a
window of lines in flight, latency includes the wait behind the lines queued before it.
Each row is the best (highest samples/s) of ``--reps`` runs, taken in turn with the others so
that a passing load hits every row alike. The full run also writes
benchmarks/results/service_bench.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from spela_stream.client import send
from spela_stream.datasets import load_mnist

RESULTS = Path(__file__).resolve().parent / "results"
LISTENING = re.compile(r"listening on tcp://127\.0\.0\.1:(\d+)")
TIMEOUT = 600.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def mnist_lines(n: int) -> list[bytes]:
    """The first ``n`` MNIST test digits as CSV lines: 784 integer pixels, then the label."""
    X, y = load_mnist(n)
    return [
        (",".join(map(str, row)) + f",{k}").encode()
        for row, k in zip(X.astype(np.int64).tolist(), y.tolist(), strict=True)
    ]


def exe() -> str:
    return shutil.which("spela-stream", path=str(Path(sys.executable).parent)) or "spela-stream"


class ServiceProcess:
    """``spela-stream learn --source tcp://127.0.0.1:0`` in its own process."""

    def __init__(self, db: Path) -> None:
        cmd = [exe(), "learn", "--source", "tcp://127.0.0.1:0", "--db", str(db), "--quiet",
               "--json", "--checkpoint-seconds", "0"]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.err: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        while True:
            line = self.err.get(timeout=TIMEOUT)
            if not line:
                raise RuntimeError("the service ended before listening")
            if m := LISTENING.search(line):
                self.port = int(m.group(1))
                return

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err.put(line)
        self.err.put("")

    def control(self, name: str) -> dict[str, Any]:
        replies: list[bytes] = []
        send("127.0.0.1", self.port, [json.dumps({"control": name}).encode()], replies.append)
        reply: dict[str, Any] = json.loads(replies[0])
        return reply

    def stop(self) -> dict[str, Any]:
        """Shut down by control line; the process's --json summary."""
        self.control("shutdown")
        out, _ = self.proc.communicate(timeout=TIMEOUT)
        if self.proc.returncode != 0:
            raise RuntimeError(f"the service exited {self.proc.returncode}")
        summary: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return summary


def client(
    port: int, lines: list[bytes], window: int, start: threading.Barrier
) -> tuple[np.ndarray, np.ndarray]:
    """Send ``lines``, timing each: (send times, reply times), perf_counter seconds."""
    sent = np.zeros(len(lines))
    got = np.zeros(len(lines))
    n_got = 0

    def timed() -> Iterator[bytes]:
        for i, line in enumerate(lines):
            sent[i] = time.perf_counter()  # send() takes a line only once it has window room
            yield line

    def on_reply(reply: bytes) -> None:
        nonlocal n_got
        got[n_got] = time.perf_counter()
        n_got += 1
        if reply.startswith(b'{"error"'):
            raise RuntimeError(reply.decode())

    start.wait()
    result = send("127.0.0.1", port, timed(), on_reply, window=window)
    assert result.answered == len(lines), result
    return sent, got


def scenario(lines: list[bytes], clients: int, window: int, tmp: Path) -> dict[str, Any]:
    """One fresh service process, ``clients`` concurrent clients sharing ``lines``."""
    service = ServiceProcess(tmp / f"service_{clients}_{window}.db")
    parts = [lines[i::clients] for i in range(clients)]  # interleaved: each a mix of digits
    barrier = threading.Barrier(clients)
    results: list[tuple[np.ndarray, np.ndarray]] = [(np.zeros(0), np.zeros(0))] * clients

    def run(c: int) -> None:
        results[c] = client(service.port, parts[c], window, barrier)

    threads = [threading.Thread(target=run, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    metrics = service.control("metrics")
    summary = service.stop()
    sent = np.concatenate([r[0] for r in results])
    got = np.concatenate([r[1] for r in results])
    if sent.size != len(lines):
        raise RuntimeError("a client failed")
    latency_ms = 1e3 * (got - sent)
    return {
        "clients": clients,
        "window": window,
        "samples": len(lines),
        "seconds": float(got.max() - sent.min()),
        "samples_per_s": len(lines) / float(got.max() - sent.min()),
        "latency_ms_median": float(np.median(latency_ms)),
        "latency_ms_p99": float(np.percentile(latency_ms, 99)),
        "latency_ms_max": float(latency_ms.max()),
        "accuracy": summary["accuracy"],
        "learned": metrics["learned"],
        "errors": metrics["errors"],
    }


def from_file(lines: list[bytes], tmp: Path) -> dict[str, Any]:
    """``spela-stream learn`` on the same lines from a CSV file: wall and its loop's rate."""
    csv = tmp / "mnist.csv"
    csv.write_bytes(b"\n".join(lines) + b"\n")
    cmd = [exe(), "learn", "--source", str(csv), "--db", str(tmp / "file.db"), "--quiet",
           "--json", "--checkpoint-seconds", "0"]  # fmt: skip
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - t
    summary = json.loads(out.strip().splitlines()[-1])
    return {
        "samples": summary["samples"],
        "wall_s": wall,
        "samples_per_s": summary["samples_per_s"],
        "accuracy": summary["accuracy"],
    }


def machine() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "?")
    return f"{cpu}, nproc {os.cpu_count()}"


def load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2,000 lines per scenario, once")
    ap.add_argument("--reps", type=int, default=2, help="runs per row; the best is kept")
    a = ap.parse_args()
    n, reps = (2000, 1) if a.quick else (10_000, max(1, a.reps))
    lines = mnist_lines(n)
    load_before = load()
    out: dict[str, Any] = {"n": n, "reps": reps, "machine": machine(), "load_before": load_before}
    rows = ((1, 256, n), (8, 256, n), (1, 1, n // 5), (8, 1, n // 5))
    files: list[dict[str, Any]] = []
    runs: list[list[dict[str, Any]]] = [[] for _ in rows]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for r in range(reps):
            log(f"repetition {r + 1}/{reps}: learn from a file, {n} lines ...")
            files.append(from_file(lines, tmp))
            for i, (clients, window, count) in enumerate(rows):
                log(f"  service: {clients} client(s), window {window}, {count} lines ...")
                runs[i].append(scenario(lines[:count], clients, window, tmp))
    out["file"] = max(files, key=lambda f: f["samples_per_s"])
    out["service"] = [max(rs, key=lambda s: s["samples_per_s"]) for rs in runs]
    out["all_runs"] = {"file": files, "service": runs}
    out["load_after"] = load()
    text = render(out, a.quick)
    print(text)
    if not a.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "service_bench.md").write_text(text + "\n")
        (RESULTS / "service_bench.json").write_text(json.dumps(out, indent=2) + "\n")
        log(f"written to {RESULTS / 'service_bench.md'} and .json")


def render(out: dict[str, Any], quick: bool) -> str:
    f = out["file"]
    lines = [
        "# Service benchmark: `learn --source tcp://` over loopback vs `learn` from a file", "",
        f"`python -m benchmarks.service_bench{' --quick' if quick else ''}` on {out['machine']}, "
        f"best of {out['reps']} run(s) per row; "
        f"1-minute load average {out['load_before']:.1f} before, {out['load_after']:.1f} after "
        "(above 1 means other work shared the cores). MNIST test set as CSV lines; `SpelaMLP()` "
        "784-1024-1024, 1 torch thread; one fresh service process per row; clients are "
        "`spela_stream.client.send` threads in the benchmark's process.", "",
        "| how the lines arrive | samples | samples/s | vs file loop | latency median | "
        "latency p99 | accuracy |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| `learn` from a CSV file: its loop's `samples_per_s` (process wall "
        f"{f['wall_s']:.1f} s) | {f['samples']:,} | {f['samples_per_s']:,.0f} | 100% | - | - | "
        f"{f['accuracy']:.4f} |",
    ]  # fmt: skip
    for s in out["service"]:
        how = (f"service, {s['clients']} client{'s' if s['clients'] > 1 else ''} at once, "
               f"{s['window']} line{'s' if s['window'] > 1 else ''} in flight each")  # fmt: skip
        lines.append(
            f"| {how} | {s['samples']:,} | {s['samples_per_s']:,.0f} | "
            f"{s['samples_per_s'] / f['samples_per_s']:.0%} | {s['latency_ms_median']:.1f} ms | "
            f"{s['latency_ms_p99']:.1f} ms | {s['accuracy']:.4f} |"
        )
    one = out["service"][0]
    lines += [
        "",
        f"With one client the service learns the lines in the file's order, so its accuracy "
        f"equals the file's ({one['accuracy']:.4f} vs {f['accuracy']:.4f}); eight clients "
        "interleave their lines, so theirs differs a little. Latency with 256 lines in flight is "
        "mostly the wait behind the lines ahead (about the lines in flight / throughput); the "
        "one-in-flight rows are the round trip of one line (parse, predict, learn, reply), with "
        "8 clients also the wait for the others' lines ahead of it.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
