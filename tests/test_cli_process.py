"""The command as a real process: real pipes, real signals, resume after an interruption."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from spela_stream.datasets import load_mnist
from storage import CheckpointStore

CMD = [sys.executable, "-m", "cli.app"]
ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120


def mnist_lines(n: int) -> list[str]:
    """A header and ``n`` MNIST digits as CSV lines: 784 pixels, then the label."""
    X, y = load_mnist(n)
    head = ",".join([f"p{i}" for i in range(784)] + ["label"])
    return [head] + [
        ",".join(map(str, row.astype(int))) + f",{k}" for row, k in zip(X, y, strict=True)
    ]


@pytest.fixture(scope="module")
def mnist_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "mnist3000.csv"
    path.write_text("\n".join(mnist_lines(3000)) + "\n")
    return path


def spawn(args: list[str], cwd: Path, stdin: int | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CMD, *args],
        cwd=cwd,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def stderr_lines(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    """Read the child's stderr on a thread, a line at a time, as it is written."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)
        lines.put("")  # EOF

    threading.Thread(target=pump, daemon=True).start()
    return lines


def wait_for_row(lines: queue.Queue[str], samples: int, seen: list[str]) -> None:
    """Block until the progress table shows a row for ``samples``."""
    while True:
        line = lines.get(timeout=TIMEOUT)
        seen.append(line)
        assert line, "the learner ended before the row appeared:\n" + "".join(seen)
        fields = line.split()
        if fields and fields[0] == str(samples):
            return


def finish(proc: subprocess.Popen[str], lines: queue.Queue[str], seen: list[str]) -> str:
    """Wait for the child; return its stdout, and gather the rest of its stderr into ``seen``."""
    assert proc.stdin is None or not proc.stdin.closed
    if proc.stdin is not None:
        proc.stdin.close()
    assert proc.stdout is not None
    out = proc.stdout.read()
    proc.wait(timeout=TIMEOUT)
    while (line := lines.get(timeout=TIMEOUT)) != "":
        seen.append(line)
    return out


def final_state(db: Path, run: str = "run-1") -> tuple[dict[str, object], dict[str, object]]:
    with CheckpointStore(db, create=False) as store:
        ck = store.load(run)
    assert ck.metrics is not None
    return ck.state, ck.metrics


def assert_same_run(a: Path, b: Path) -> None:
    (sa, ma), (sb, mb) = final_state(a), final_state(b)
    assert sa.keys() == sb.keys()
    for key, value in sa.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(value, sb[key], err_msg=key)
        else:
            assert value == sb[key], key
    assert ma["summary"] == mb["summary"]
    assert ma["samples"] == mb["samples"] == ma["position"]


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGKILL, -9)]
)
def test_a_signal_checkpoints_and_resume_equals_an_unbroken_run(
    tmp_path: Path, mnist_csv: Path, signum: int, code: int
) -> None:
    # SIGKILL stands for a power cut: no chance to save, so the run resumes from the last of its
    # checkpoints (every 500 samples here) and loses nothing that was checkpointed.
    args = ["learn", "-s", str(mnist_csv), "--hidden", "128", "--every", "100000"]
    if signum == signal.SIGKILL:
        args += ["--checkpoint-every", "500"]
    whole = subprocess.run(
        [*CMD, *args, "--db", "whole.db"], cwd=tmp_path, capture_output=True, text=True,
        timeout=TIMEOUT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert whole.returncode == 0, whole.stderr

    proc = spawn([*args, "--db", "parts.db"], tmp_path)
    lines, seen = stderr_lines(proc), []
    wait_for_row(lines, 1024 if signum == signal.SIGKILL else 256, seen)  # under way
    proc.send_signal(signum)
    out = finish(proc, lines, seen)
    assert proc.returncode == code, "".join(seen)
    _, metrics = final_state(tmp_path / "parts.db")
    cut = metrics["samples"]
    if signum == signal.SIGKILL:
        assert out == "" and cut in (1000, 1500, 2000, 2500), cut
    else:
        assert out.startswith("accuracy "), out
        assert f"stopped by {signal.Signals(signum).name}" in "".join(seen)
        assert isinstance(cut, int) and 256 <= cut < 3000, cut

    resumed = subprocess.run(
        [*CMD, "learn", "--resume", "--db", "parts.db", "--every", "100000"], cwd=tmp_path,
        capture_output=True, text=True, timeout=TIMEOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming run 'run-1' from checkpoint" in resumed.stderr
    assert_same_run(tmp_path / "whole.db", tmp_path / "parts.db")
    assert resumed.stdout == whole.stdout  # the same closing accuracy line


def test_ctrl_c_while_waiting_on_a_quiet_pipe(tmp_path: Path) -> None:
    """A slow producer: the learner is blocked reading stdin when Ctrl-C comes; it checkpoints
    everything it had and exits 130 at once."""
    proc = spawn(["learn", "-s", "-", "--hidden", "16", "--every", "200"], tmp_path,
                 stdin=subprocess.PIPE)  # fmt: skip
    lines, seen = stderr_lines(proc), []
    assert proc.stdin is not None
    proc.stdin.write("\n".join(mnist_lines(200)) + "\n")
    proc.stdin.flush()  # and then nothing more: the pipe stays open
    wait_for_row(lines, 200, seen)  # all of it learned; the learner now waits for more
    proc.send_signal(signal.SIGINT)
    out = finish(proc, lines, seen)
    assert proc.returncode == 130, "".join(seen)
    assert out == "accuracy " + out.split(" ", 1)[1] and "after 200 samples of -" in out
    with CheckpointStore(tmp_path / "runs.db", create=False) as store:
        ck = store.load("run-1")
    assert (ck.info.samples, ck.info.position) == (200, 200)
    assert ck.info.where == "<stdin> line 201"


def test_learn_from_a_real_pipe(tmp_path: Path, mnist_csv: Path) -> None:
    cat = subprocess.Popen(["cat", str(mnist_csv)], stdout=subprocess.PIPE)
    learn = subprocess.run(
        [*CMD, "learn", "-s", "-", "--hidden", "64", "--limit", "1000", "--json"],
        stdin=cat.stdout, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert cat.stdout is not None
    cat.stdout.close()
    cat.wait(timeout=TIMEOUT)
    assert learn.returncode == 0, learn.stderr
    last = learn.stdout.splitlines()[-1]
    assert '"kind": "summary"' in last and '"samples": 1000' in last
    assert "Traceback" not in learn.stderr


def test_predict_into_head_ends_quietly(tmp_path: Path) -> None:
    first = subprocess.run(
        [*CMD, "learn", "--hidden", "16", "--limit", "200", "--quiet"], cwd=tmp_path,
        capture_output=True, text=True, timeout=TIMEOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    predict = spawn(["predict", "-s", "builtin:mnist"], tmp_path)
    head = subprocess.run(["head", "-n", "3"], stdin=predict.stdout, capture_output=True,
                          text=True, timeout=TIMEOUT)  # fmt: skip
    assert predict.stdout is not None
    predict.stdout.close()
    _, err = predict.communicate(timeout=TIMEOUT)
    assert head.stdout.splitlines()[0] == "label,confidence,layer"
    assert len(head.stdout.splitlines()) == 3
    assert predict.returncode == 0 and "Traceback" not in err and "Error" not in err, err


def test_help_and_listing_do_not_load_torch(tmp_path: Path) -> None:
    """--help, runs and checkpoints answer in a fraction of a second: no torch, no river."""
    code = (
        "import sys; from typer.testing import CliRunner; from cli.app import app; "
        "r = CliRunner().invoke(app, sys.argv[1:]); "
        "print(r.exit_code, 'torch' in sys.modules, 'river' in sys.modules)"
    )
    for args in (["--help"], ["runs", "--db", "none.db"], ["checkpoints", "--db", "none.db"]):
        out = subprocess.run(
            [sys.executable, "-c", code, *args], cwd=tmp_path, capture_output=True, text=True,
            timeout=TIMEOUT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        assert out.stdout.split()[1:] == ["False", "False"], (args, out.stdout, out.stderr)
