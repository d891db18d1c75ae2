"""The service as real processes: ``spela-stream learn --source tcp://127.0.0.1:0`` and ``predict``
listening on ephemeral ports, ``spela-stream send`` and raw sockets as clients, real signals."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from spela_stream.datasets import load_mnist
from storage import CheckpointStore

CMD = [sys.executable, "-m", "cli.app"]
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
TIMEOUT = 120
LISTENING = re.compile(r"^listening on tcp://127\.0\.0\.1:(\d+)$")


@pytest.fixture(scope="module")
def mnist(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """600 MNIST digits as CSV lines (784 pixels, then the label)."""
    X, y = load_mnist(600)
    return [",".join(map(str, row.astype(int))) + f",{k}" for row, k in zip(X, y, strict=True)]


class Service:
    """A service process; its stderr is read on a thread so that it never blocks on a pipe."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [*CMD, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=ENV,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        while True:
            line = self.lines.get(timeout=TIMEOUT)
            self.seen.append(line)
            assert line, "the service ended before listening:\n" + "".join(self.seen)
            if m := LISTENING.match(line.strip()):
                self.port = int(m.group(1))
                self.url = f"tcp://127.0.0.1:{self.port}"
                return

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)
        self.lines.put("")

    def finish(self, signum: int | None = None) -> tuple[int, str, str]:
        """Signal it (if asked), wait; (exit code, stdout, stderr)."""
        if signum is not None:
            self.proc.send_signal(signum)
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        self.proc.wait(timeout=TIMEOUT)
        while (line := self.lines.get(timeout=TIMEOUT)) != "":
            self.seen.append(line)
        return self.proc.returncode, out, "".join(self.seen)


def send(url: str, cwd: Path, path: str = "-", stdin: str | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CMD, "send", "--to", url, path], cwd=cwd, stdin=subprocess.PIPE if stdin else None,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip


def raw_client(port: int, lines: list[str]) -> list[dict[str, object]]:
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall("".join(line + "\n" for line in lines).encode())
        with sock.makefile("rb") as replies:
            return [json.loads(replies.readline()) for _ in lines]


def test_serve_sigterm_resume_shutdown_and_predict(tmp_path: Path, mnist: list[str]) -> None:
    """Two clients at once (``send`` on a file, a raw socket), SIGTERM -> checkpoint -> 143;
    ``--resume`` serves the same run on, a shutdown line checkpoints and ends it (exit 0);
    ``predict`` serves the saved model, learns nothing, and Ctrl-C ends it (130)."""
    (tmp_path / "part1.csv").write_text("\n".join(mnist[:300]) + "\n")
    args = ["--db", "runs.db", "--run", "svc", "--every", "100"]
    service = Service(["learn", "-s", "tcp://127.0.0.1:0", "--hidden", "64", *args], tmp_path)
    sender = send(service.url, tmp_path, "part1.csv")
    raw = raw_client(service.port, mnist[300:400])
    out, err = sender.communicate(timeout=TIMEOUT)
    assert sender.returncode == 0, err
    replies = [json.loads(line) for line in out.splitlines()]
    assert len(replies) == 300 and all(r["learned"] is True for r in replies + raw)
    assert err.strip() == f"sent 300 lines to {service.url}: 300 replies, 0 errors"
    code, out, log = service.finish(signal.SIGTERM)
    assert code == 143, log
    first_url = service.url  # port 0 got a real port: the run records that one
    assert out.startswith("accuracy ") and f"after 400 samples of {first_url}\n" in out
    with CheckpointStore(tmp_path / "runs.db", create=False) as store:
        assert store.run("svc").source == first_url
    assert "stopped by SIGTERM: 400 samples (400 learned, 0 rejected)" in log
    assert "Traceback" not in log

    service = Service(["learn", "--resume", "-s", "tcp://127.0.0.1:0", *args], tmp_path)
    resumed = "".join(service.seen)
    assert "resuming run 'svc' from checkpoint" in resumed
    # a socket carries new lines: the notes say nothing was skipped, and name no record to go on at
    assert (
        "note: tcp://127.0.0.1:0 is a service: its clients send new lines, so nothing is "
        "skipped" in resumed
    )
    assert "reading new data from tcp://127.0.0.1:0, nothing skipped" in resumed
    assert "from record" not in resumed and "read before" not in resumed
    lines = mnist[400:500] + ["1,2,oops", '{"control": "shutdown"}']
    sender = send(service.url, tmp_path, stdin="\n".join(lines))
    out, err = sender.communicate("\n".join(lines) + "\n", timeout=TIMEOUT)
    assert sender.returncode == 0, err
    *learned, bad, bye = [json.loads(line) for line in out.splitlines()]
    assert len(learned) == 100 and "785" in bad["error"] and "line 101" in bad["error"]
    code, out, log = service.finish()
    assert code == 0, log
    assert "stopped by a shutdown line: 500 samples (500 learned, 1 rejected)" in log
    with CheckpointStore(tmp_path / "runs.db", create=False) as store:
        checkpoints = store.checkpoints("svc")
        assert store.run("svc").source == first_url  # where the run began
        assert checkpoints[-1].source == service.url != first_url  # where it was resumed
    assert bye == {"control": "shutdown", "samples": 500, "checkpoint": checkpoints[-1].id}
    assert [c.samples for c in checkpoints][-2:] == [400, 500]

    service = Service(["predict", "-s", "tcp://127.0.0.1:0", "--db", "runs.db"], tmp_path)
    unlabelled = [line.rsplit(",", 1)[0] for line in mnist[500:600]]
    predicted = raw_client(service.port, unlabelled)
    code, out, log = service.finish(signal.SIGINT)
    assert code == 130 and out == "", log
    assert all(r["learned"] is False for r in predicted)
    correct = sum(r["label"] == int(line.rsplit(",", 1)[1]) for r, line in
                  zip(predicted, mnist[500:600], strict=True))  # fmt: skip
    assert correct >= 60  # a 64-wide net after 500 digits; chance is 10
    with CheckpointStore(tmp_path / "runs.db", create=False) as store:
        assert store.checkpoints("svc")[-1].samples == 500  # predict saved nothing


runner = CliRunner()


def test_send_without_a_service_says_how_to_start_one(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "x.csv").write_text("1,2,3\n")
    result = runner.invoke(
        app, ["send", "--to", f"tcp://127.0.0.1:{port}", str(tmp_path / "x.csv")]
    )
    assert result.exit_code == 1
    assert f"Error: tcp://127.0.0.1:{port}: cannot connect:" in result.output
    assert "is a service listening? start one with spela-stream learn --source" in result.output


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [(["learn", "-s", "tcp://localhost"], 1, "not a socket address; write tcp://HOST:PORT"),
     (["learn", "-s", "tcp://127.0.0.1:0", "--format", "csv"], 2, "--format does not apply"),
     (["send", "--to", "tcp://127.0.0.1:1", "missing.csv"], 1, "missing.csv: no such file")],
)  # fmt: skip
def test_bad_service_arguments_name_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], code: int, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    assert message in result.output and "Traceback" not in result.output


def test_send_does_not_load_torch(tmp_path: Path) -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from cli.app import app; "
        "r = CliRunner().invoke(app, ['send', '--to', 'tcp://127.0.0.1:1', '-'], input=''); "
        "print(r.exit_code, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=TIMEOUT, env=ENV)  # fmt: skip
    assert out.stdout.split() == ["1", "False"], out.stderr
