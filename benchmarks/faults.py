"""Shared pieces of the fault trials (benchmarks/reliability.py) and their tests.

The trials run the real command as a child process (``python -m cli.app``, what the
``spela-stream`` entry point calls), on real SQLite files, and read back only what the
process and the files show: exit codes, stderr lines, checkpoints, the WAL on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CMD = [sys.executable, "-m", "cli.app"]
TIMEOUT = 300.0
# Lines that say what went wrong, in the order they are preferred as "the message".
_MARKS = ("Error:", "no longer running", "warning:", "damaged:", "DAMAGED", "note:")


def child_env() -> dict[str, str]:
    """The environment of a child command: this checkout first on the path, 1 torch thread."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@dataclass
class Outcome:
    """What a finished command showed: its exit code and its two streams."""

    code: int
    out: str
    err: str

    @property
    def message(self) -> str:
        """The first line that reports a problem, else the last line of stderr (or stdout)."""
        return message_line(self.err) or message_line(self.out) or last_line(self.err or self.out)

    @property
    def traceback(self) -> bool:
        return "Traceback" in self.err or "Traceback" in self.out


def last_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def message_line(text: str) -> str:
    """The first line of ``text`` that starts an error, a warning or a verdict ('' if none)."""
    for mark in _MARKS:
        for line in text.splitlines():
            if mark in line:
                return line.strip()
    return ""


def cli(args: list[str], cwd: Path, stdin: str | None = None, timeout: float = TIMEOUT) -> Outcome:
    """Run ``spela-stream ARGS`` to its end in ``cwd``."""
    done = subprocess.run(
        [*CMD, *args], cwd=cwd, input=stdin, capture_output=True, text=True,
        timeout=timeout, env=child_env(),
    )  # fmt: skip
    return Outcome(done.returncode, done.stdout, done.stderr)


def spawn(args: list[str], cwd: Path, stdin: int | None = None) -> subprocess.Popen[str]:
    """Start ``spela-stream ARGS`` in ``cwd``; stdout and stderr are pipes."""
    return subprocess.Popen(
        [*CMD, *args], cwd=cwd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=child_env(),
    )  # fmt: skip


def pump(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    """The child's stderr, a line at a time as written, on a thread ('' at the end)."""
    lines: queue.Queue[str] = queue.Queue()

    def run() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)
        lines.put("")

    threading.Thread(target=run, daemon=True).start()
    return lines


def wait_for_row(lines: queue.Queue[str], samples: int, timeout: float = 300.0) -> bool:
    """Block until the progress table shows the row of ``samples``; False if the child ended."""
    end = time.monotonic() + timeout
    while (line := lines.get(timeout=max(0.1, end - time.monotonic()))) != "":
        fields = line.split()
        if fields and fields[0].isdigit() and int(fields[0]) >= samples:
            return True
    return False


def mnist_csv(path: Path, n: int) -> Path:
    """Write a header and ``n`` MNIST digits as CSV (784 pixels, then the label) to ``path``."""
    from spela_stream.datasets import load_mnist

    X, y = load_mnist(n)
    head = ",".join([f"p{i}" for i in range(784)] + ["label"])
    rows = [",".join(map(str, r.astype(int))) + f",{k}" for r, k in zip(X, y, strict=True)]
    path.write_text("\n".join([head, *rows]) + "\n")
    return path


def model_digest(db: Path, run: str) -> tuple[str, int]:
    """sha256 of a run's latest checkpoint, every array's bytes and every JSON value, and its
    sample count. Two runs with one digest hold bit-identical models and metrics."""
    from storage import CheckpointStore

    with CheckpointStore(db, create=False, readonly=True) as store:
        ck = store.load(run)
    h = hashlib.sha256()
    for key in sorted(ck.state):
        value = ck.state[key]
        h.update(key.encode())
        if isinstance(value, np.ndarray):
            h.update(value.dtype.str.encode() + str(value.shape).encode() + value.tobytes())
        else:
            h.update(json.dumps(value, sort_keys=True).encode())
    summary = (ck.metrics or {}).get("summary")
    h.update(json.dumps(summary, sort_keys=True).encode())
    return h.hexdigest(), ck.info.samples


@dataclass
class WalState:
    """What a WAL file holds: valid frames, how many of them commit, and any after the last."""

    frames: int
    commits: int
    uncommitted: int

    @property
    def mid_write(self) -> bool:
        """True when a transaction had written frames but not its commit frame."""
        return self.uncommitted > 0


def _checksum(data: bytes, s0: int, s1: int, big: bool) -> tuple[int, int]:
    words = struct.unpack((">" if big else "<") + f"{len(data) // 4}I", data)
    mask = 0xFFFFFFFF
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & mask
        s1 = (s1 + words[i + 1] + s0) & mask
    return s0, s1


def wal_state(wal: Path) -> WalState:
    """Read a SQLite WAL file as SQLite's recovery does: frames count while their salts and
    running checksum match the header. An absent or empty file holds nothing."""
    data = wal.read_bytes() if wal.exists() else b""
    if len(data) < 32:
        return WalState(0, 0, 0)
    magic, _, page, _, salt1, salt2, c0, c1 = struct.unpack(">8I", data[:32])
    if magic not in (0x377F0682, 0x377F0683):
        return WalState(0, 0, 0)
    big = magic == 0x377F0683
    if _checksum(data[:24], 0, 0, big) != (c0, c1):
        return WalState(0, 0, 0)
    s0, s1 = c0, c1
    frames = commits = since = 0
    offset, size = 32, 24 + page
    while offset + size <= len(data):
        pgno, commit, fs1, fs2, f0, f1 = struct.unpack(">6I", data[offset : offset + 24])
        if (fs1, fs2) != (salt1, salt2) or pgno == 0:
            break
        s0, s1 = _checksum(data[offset : offset + 8], s0, s1, big)
        s0, s1 = _checksum(data[offset + 24 : offset + size], s0, s1, big)
        if (s0, s1) != (f0, f1):
            break
        frames += 1
        since += 1
        if commit:
            commits += 1
            since = 0
        offset += size
    return WalState(frames, commits, since)


# SQLite's unix VFS locks byte 120 of the -shm file (UNIX_SHM_BASE + WAL_WRITE_LOCK) for as
# long as a write transaction is open on a WAL database.
WAL_WRITE_LOCK_BYTE = 120


def write_lock_holder(shm: Path) -> int | None:
    """The pid holding a WAL database's write lock (a write transaction is open), or None."""
    import fcntl

    try:
        fd = os.open(shm, os.O_RDWR)
    except OSError:
        return None
    try:
        query = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, WAL_WRITE_LOCK_BYTE, 1, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query + b"\0" * 4)
        kind, _, _, _, pid = struct.unpack("hhqqi", answer[: struct.calcsize("hhqqi")])
    finally:
        os.close(fd)
    return None if kind == fcntl.F_UNLCK else pid


def rss_mib(pid: int) -> float | None:
    """The resident set size of a live process in MiB, from /proc (None once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


@dataclass
class Section:
    """One part of docs/reliability.md: what was done, a table of what was seen, a verdict."""

    title: str
    intro: str
    header: list[str]
    rows: list[list[object]] = field(default_factory=list)
    verdict: str = ""
    seconds: float = 0.0

    def markdown(self) -> str:
        """The section as Markdown: a heading, the intro, the table, the verdict."""
        cells = [[_cell(c) for c in row] for row in self.rows]
        lines = [f"## {self.title}", "", self.intro.strip(), ""]
        lines.append("| " + " | ".join(self.header) + " |")
        lines.append("|" + "|".join("---" for _ in self.header) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        lines += ["", f"{self.verdict} ({self.seconds:.0f} s)", ""]
        return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def code(text: str, limit: int = 150) -> str:
    """``text`` as inline code, cut to ``limit`` characters ('' stays '')."""
    text = text.replace("`", "'")
    return f"`{text[:limit]}`" if text else ""
