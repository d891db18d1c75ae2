"""A signal is honoured promptly while the learner is busy (issue 12, defect 4): real
``spela-stream learn`` processes, on stdin and as a TCP service, fed as fast as they read, most
lines with a label never seen before (so the class vectors keep growing); SIGTERM or SIGINT must
end the process, with its checkpoint written, within ``BOUND_S``. The figures are printed (run
with ``-s`` to see them)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from storage import CheckpointStore

CMD = [sys.executable, "-m", "cli.app"]
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
TIMEOUT = 120.0
BOUND_S = 1.0  # signal sent -> process gone, its checkpoint written
BUSY_AFTER = 512  # samples learned before the signal, so it lands mid-stream
ROW = re.compile(r"^\s*(\d+)\s")  # a progress-table row starts with the sample count
LISTENING = re.compile(r"^listening on tcp://127\.0\.0\.1:(\d+)$")


def lines(new_labels: bool, n: int = 20_000) -> list[bytes]:
    """8 features and a label: a new label per line, or ten that repeat."""
    rng = np.random.default_rng(0)
    X = rng.random((1000, 8))
    return [
        (
            ",".join(f"{v:.3f}" for v in X[i % 1000]) + f",{f'c{i}' if new_labels else i % 10}\n"
        ).encode()
        for i in range(n)
    ]


class Learner:
    """A ``learn`` process; stderr read on a thread, watching for the listening line and rows."""

    def __init__(self, args: list[str], cwd: Path, stdin: int | None = None) -> None:
        self.proc = subprocess.Popen(
            [*CMD, "learn", "--db", "runs.db", "--run", "r", "--hidden", "64", "--every", "128",
             *args], cwd=cwd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=ENV,
        )  # fmt: skip
        self.samples = 0
        self.port: int | None = None
        self.log: list[str] = []
        self.listening = threading.Event()
        self.busy = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace")
            self.log.append(line)
            if m := LISTENING.match(line.strip()):
                self.port = int(m.group(1))
                self.listening.set()
            elif m := ROW.match(line):
                self.samples = int(m.group(1))
                if self.samples >= BUSY_AFTER:
                    self.busy.set()
        self.listening.set()
        self.busy.set()

    def stop(self, signum: int) -> tuple[float, int]:
        """Signal it once it is busy; (seconds until it is gone, its exit code)."""
        assert self.busy.wait(TIMEOUT), "".join(self.log)
        assert self.proc.poll() is None, "it ended before the signal:\n" + "".join(self.log)
        sent = time.monotonic()
        self.proc.send_signal(signum)
        code = self.proc.wait(TIMEOUT)
        return time.monotonic() - sent, code


def feed_stdin(proc: subprocess.Popen[bytes], data: list[bytes]) -> None:
    assert proc.stdin is not None
    try:
        for i in range(0, len(data), 64):
            proc.stdin.write(b"".join(data[i : i + 64]))
        proc.stdin.close()
    except (BrokenPipeError, ValueError, OSError):
        pass  # the learner went away: that is the point


def feed_socket(port: int, data: list[bytes]) -> None:
    """Pipeline lines into the service as fast as it takes them; read replies alongside."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    except OSError:
        return

    def drain() -> None:
        try:
            while sock.recv(1 << 16):
                pass
        except OSError:
            pass

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        for i in range(0, len(data), 64):
            sock.sendall(b"".join(data[i : i + 64]))
        sock.shutdown(socket.SHUT_WR)  # all sent: the replies still come, until the signal
    except OSError:
        pass  # the service went away
    reader.join(TIMEOUT)
    sock.close()


def saved(db: Path) -> int:
    with CheckpointStore(db, create=False) as store:
        return store.checkpoints("r")[-1].samples


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("new_labels", [True, False], ids=["new-labels", "ten-labels"])
@pytest.mark.parametrize("kind", ["stdin", "tcp"])
def test_a_busy_learner_honours_a_signal_within_the_bound(
    tmp_path: Path, kind: str, new_labels: bool, signum: int
) -> None:
    data = lines(new_labels)
    if kind == "stdin":
        learner = Learner(["--source", "-"], tmp_path, stdin=subprocess.PIPE)
        feeder = threading.Thread(target=feed_stdin, args=(learner.proc, data), daemon=True)
    else:
        learner = Learner(["--source", "tcp://127.0.0.1:0", "--features", "8"], tmp_path)
        assert learner.listening.wait(TIMEOUT) and learner.port, "".join(learner.log)
        feeder = threading.Thread(target=feed_socket, args=(learner.port, data), daemon=True)
    feeder.start()
    assert learner.busy.wait(TIMEOUT), "".join(learner.log)
    seen_before = learner.samples
    seconds, code = learner.stop(signum)
    log = "".join(learner.log)
    print(f"\n{kind} {'new labels' if new_labels else 'ten labels'} {signal.Signals(signum).name}:"
          f" gone {seconds * 1000:.0f} ms after the signal, {saved(tmp_path / 'runs.db')} samples "
          "checkpointed")  # fmt: skip
    assert code == 128 + signum, log
    assert f"stopped by {signal.Signals(signum).name}" in log and "Traceback" not in log
    assert saved(tmp_path / "runs.db") >= seen_before >= BUSY_AFTER  # what it learned is kept
    assert seconds < BOUND_S, log
