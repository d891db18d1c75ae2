"""Where a frame's label comes from: one class for the whole run, a label track, or a channel.

- ``FixedLabel("cat")`` (``--label cat``): every frame is taught as that class.
- ``LabelTrack.read("labels.txt")`` (``--labels FILE``): a label per frame of a recorded video,
  either a line per frame (line 1 labels frame 0; an empty line leaves a frame unlabelled) or
  ranges ``start,end,label`` (frames start..end-1, 0-based, end exclusive like Python's range).
  Frames the track does not cover are unlabelled (predicted, not learned).
- ``LabelChannel(port)`` (``--label-port PORT``): a TCP listener on 127.0.0.1; a line ``NAME``
  starts teaching NAME, a line ``-`` stops (frames are predicted again). Each line is answered
  with ``teaching NAME`` or ``predicting``. Any number of clients, one thread each.

A policy is asked for a frame's label when the learner takes the frame, so a class switch on the
channel applies to the next frame learned.
"""

from __future__ import annotations

import bisect
import re
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from ..errors import ConfigError, SourceError
from ..inputs import Label
from .base import label_token

LabelPolicy = Callable[[int], Label | None]  # frame index -> label, or None to predict only
_RANGE = re.compile(r"\s*([0-9]+)\s*,\s*([0-9]+)\s*,(.*)")
MAX_LINE = 1024  # bytes of one channel line


def no_label(index: int) -> None:
    """Every frame unlabelled: the learner predicts."""
    return None


class FixedLabel:
    """Every frame is taught as ``label``."""

    def __init__(self, label: str) -> None:
        token = label_token(label)
        if token is None:
            raise SourceError("--label needs a class name (got an empty one)")
        self.label: Label = token

    def __call__(self, index: int) -> Label:
        return self.label


class LabelTrack:
    """A label per frame index, from a file of lines or ``start,end,label`` ranges."""

    def __init__(self, name: str, ranges: list[tuple[int, int, Label | None]]) -> None:
        self.name = name
        self.ranges = ranges  # sorted, non-overlapping [start, end)
        self._starts = [r[0] for r in ranges]

    @classmethod
    def read(cls, path: str | Path) -> LabelTrack:
        """Parse a label track; a bad line raises SourceError naming the file and line."""
        name = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SourceError(f"{name}: cannot read the label track ({exc})") from None
        lines = text.splitlines()
        first = next((ln for ln in lines if ln.strip()), None)
        if first is None:
            raise SourceError(f"{name}: the label track is empty (a label per line, or ranges)")
        if _RANGE.fullmatch(first) is None:
            return cls(name, [(i, i + 1, label_token(ln)) for i, ln in enumerate(lines)])
        ranges: list[tuple[int, int, Label | None]] = []
        for no, line in enumerate(lines, 1):
            if not line.strip():
                continue
            m = _RANGE.fullmatch(line)
            if m is None:
                raise SourceError(
                    f"{name} line {no}: {line[:60]!r} is not start,end,label (the file began "
                    "with ranges, so every line must be one)"
                )
            start, end, label = int(m[1]), int(m[2]), label_token(m[3])
            if end <= start:
                raise SourceError(f"{name} line {no}: end {end} must be after start {start}")
            if label is None:
                raise SourceError(f"{name} line {no}: the range {start},{end} has no label")
            if ranges and start < ranges[-1][1]:
                raise SourceError(
                    f"{name} line {no}: range {start},{end} overlaps or precedes the one before "
                    "(give ranges in frame order, without overlaps)"
                )
            ranges.append((start, end, label))
        return cls(name, ranges)

    def __call__(self, index: int) -> Label | None:
        i = bisect.bisect_right(self._starts, index) - 1
        if i < 0:
            return None
        start, end, label = self.ranges[i]
        return label if start <= index < end else None


class LabelChannel:
    """A TCP listener on 127.0.0.1 whose lines set the class being taught (``-`` stops)."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((host, port))
        except OSError as exc:
            self._sock.close()
            raise SourceError(
                f"--label-port {port}: cannot listen on {host}:{port} ({exc.strerror}); "
                "choose another port, or 0 for any free one"
            ) from None
        self._sock.listen(8)
        self._sock.settimeout(0.2)  # the accept loop looks at ``close`` five times a second
        self.port: int = self._sock.getsockname()[1]
        self.current: Label | None = None
        self.switches = 0
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="label-channel", daemon=True)
        self._thread.start()

    def __call__(self, index: int) -> Label | None:
        return self.current

    def set(self, text: str) -> str:
        """Apply one channel line; return the answer sent back."""
        token = text.strip()
        with self._lock:
            if token == "-":
                self.current = None
            else:
                self.current = label_token(token)
            self.switches += 1
            return "predicting" if self.current is None else f"teaching {self.current}"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:  # the listener was closed
                return
            conn.settimeout(None)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        """Answer one client's lines. Any client is survivable: a reset or a client gone before
        its reply ends only this connection, and a line over MAX_LINE bytes is answered with
        an error and skipped to its newline (memory stays bounded)."""
        try:
            with conn, conn.makefile("rb") as fh:
                while not self._closed.is_set():
                    raw = fh.readline(MAX_LINE + 1)
                    if not raw:
                        return
                    if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
                        while raw and not raw.endswith(b"\n"):  # the rest of the long line
                            raw = fh.readline(MAX_LINE + 1)
                        answer = f"error: line longer than {MAX_LINE} bytes (send one name a line)"
                    else:
                        try:
                            line = raw.decode("utf-8").strip()
                        except UnicodeDecodeError:
                            line, answer = "", "error: not UTF-8 text (send a class name)"
                        else:
                            if not line:
                                continue
                            answer = self.set(line)
                    conn.sendall((answer + "\n").encode())
        except OSError:  # reset, or the client left before reading: its lines still count
            return

    def close(self) -> None:
        """Stop listening (clients still connected are left to finish their line)."""
        self._closed.set()
        self._sock.close()


def label_policy(
    label: str | None = None,
    labels: str | Path | None = None,
    label_port: int | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> LabelPolicy | None:
    """How frames are labelled, given at most one way: every frame as ``label``, the track in
    the file ``labels``, or a ``LabelChannel`` on 127.0.0.1:``label_port`` (0: any free port,
    which ``log`` hears with how to use it; the caller closes it); None (no way given) predicts."""
    asked = {"label": label, "labels": labels, "label_port": label_port}
    given = [f"`{name}`" for name, value in asked.items() if value is not None]
    if len(given) > 1:
        raise ConfigError(f"{' and '.join(given)}: give one way of labelling frames")
    if label is not None:
        return FixedLabel(label)
    if labels is not None:
        return LabelTrack.read(labels)
    if label_port is not None:
        channel = LabelChannel(label_port)
        log(
            f"label channel on 127.0.0.1:{channel.port}: send a line NAME to teach NAME, - to "
            f"stop (e.g. nc 127.0.0.1 {channel.port})"
        )
        return channel
    return None
