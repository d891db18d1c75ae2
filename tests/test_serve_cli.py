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
    held = [r for r in replies + raw if r.get("held")]  # the first line, until a second agrees
    assert len(replies) == 300 and len(held) == 1 and held[0]["learned"] is False
    assert all(r["learned"] is True for r in replies + raw if not r.get("held"))
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


def _model_width(db: Path, run: str) -> int | None:
    with CheckpointStore(db, create=False) as store:
        n = store.load(run).state["n_features"]
        return None if n is None else int(n)


def test_a_stray_first_line_does_not_fix_a_fresh_services_layout(tmp_path: Path) -> None:
    """No layout given: ``1,2`` first (held, then refused), proper lines after it set the
    layout; a service that only ever heard ``1,2`` persists no model at all."""
    good = [f"{i % 3},{i % 5},{i % 7},{i % 2}" for i in range(20)]  # 3 features, a label
    service = Service(["learn", "-s", "tcp://127.0.0.1:0", "--db", "runs.db", "--run", "s",
                       "--hidden", "8"], tmp_path)  # fmt: skip
    replies = raw_client(service.port, ["1,2", *good, '{"control": "shutdown"}'])
    code, _, log = service.finish()
    assert code == 0, log
    stray, first, *rest, bye = replies
    assert stray == {"label": None, "confidence": 0.0, "layer": 0, "learned": False, "held": True}
    assert first["held"] is True and all(r["learned"] is True for r in rest)  # rest[0] confirms
    assert bye["samples"] == 20
    assert "stopped by a shutdown line: 20 samples (20 learned, 1 rejected)" in log
    assert "skipped client 127.0.0.1:" in log and "line 1: 2 fields, expected 4 (the layout " \
        "confirmed by the first lines: 3 features, then the label" in log  # fmt: skip
    assert _model_width(tmp_path / "runs.db", "s") == 3

    service = Service(["learn", "-s", "tcp://127.0.0.1:0", "--db", "runs.db", "--run", "lone",
                       "--hidden", "8"], tmp_path)  # fmt: skip
    (held, bye) = raw_client(service.port, ["1,2", '{"control": "shutdown"}'])
    code, _, log = service.finish()
    assert code == 0, log
    assert held["held"] is True and bye["samples"] == 0
    assert "0 samples (0 learned, 1 rejected)" in log and "before a layout was confirmed" in log
    assert _model_width(tmp_path / "runs.db", "lone") is None  # nothing of 1,2 persists


@pytest.mark.parametrize(
    "layout", [["--features", "3"], ["--columns", "a,b,c,label"], ["--features", "3",
                                                                     "--columns", "a,b,c,label"]]
)  # fmt: skip
def test_a_service_told_its_layout_refuses_lines_that_do_not_fit(
    tmp_path: Path, layout: list[str]
) -> None:
    good = [f"{i % 3},{i % 5},{i % 7},{i % 2}" for i in range(10)]
    lines = ["1,2", '{"x": [1, 2]}', "1,x,3,0", *good, "a,b,c,label", '{"control": "shutdown"}']
    service = Service(["learn", "-s", "tcp://127.0.0.1:0", "--db", "runs.db", "--run", "g",
                       "--hidden", "8", *layout], tmp_path)  # fmt: skip
    short, json_short, bad_field, *learned, header, bye = raw_client(service.port, lines)
    code, _, log = service.finish()
    assert code == 0, log
    names = " (a,b,c,label)" if "--columns" in layout else ""
    fits = f"the layout given: 3 features, then the label{names}"
    assert short["error"].endswith(
        f"line 1: 2 fields, expected 4 ({fits}; send one record of that layout per line)"
    )
    assert json_short["error"].endswith(f'line 2: 2 "x" values, expected 3 ({fits}; send one '
                                        "record of that layout per line)")  # fmt: skip
    assert " line 3: field 2" in bad_field["error"] and "is 'x', not a number" in bad_field["error"]
    assert bad_field["error"].endswith(fits)
    assert all(r["learned"] is True and "held" not in r for r in learned)  # none waits
    if "--columns" in layout:  # a client may send the header it was given
        assert header == {"header": True, "columns": 4}
    else:  # a width alone names no columns: a header is a bad record
        assert " line 14: field 1 is 'a', not a number" in header["error"]
    assert bye["samples"] == 10 and _model_width(tmp_path / "runs.db", "g") == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--features", "2", "--columns", "a,b,c,label"], "--features 2 disagrees with the 4"),
     (["--columns", "a,a"], "give distinct column names")],
)  # fmt: skip
def test_a_layout_that_contradicts_itself_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["learn", "-s", "tcp://127.0.0.1:0", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
