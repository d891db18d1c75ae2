"""Frames from OpenCV: a camera index, a video file or a network stream (HTTP MJPEG, RTSP).

``camera`` and ``camera:N`` open camera N (live), ``camera:URL`` a stream (live), ``camera:PATH``
a video file. Capture runs on its own thread and hands frames to the learner's thread through a
bounded queue:

- live sources drop the OLDEST waiting frame when the queue is full (the learner fell behind)
  and count it in ``dropped``; ``fps`` takes at most that many frames a second (wall clock);
- a video file is read at the learner's pace, never dropping a frame, in full batches, so a
  run's results do not depend on timing; with ``fps`` the file plays in real time instead
  (its own frame rate), sampled at ``fps`` frames per second of video, and drops like a camera.

Positions read ``video.avi frame 123`` (0-based frame number; a resumed file run skips what it
learned) or ``camera 0 frame 7`` (counted from when the camera opened).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2

from ..errors import SourceError
from .base import BadRecordError
from .framebase import MAX_BATCH, Frame, FrameStream, to_rgb

LIVE_QUEUE = MAX_BATCH  # frames waiting at most for a live source (about a second at 30 fps)
FILE_QUEUE = 2 * MAX_BATCH  # frames decoded ahead of the learner for a file
OPEN_TIMEOUT_S = 10.0
ALTERNATIVES = "a video file camera:PATH, a stream camera:URL, images:DIR"


def camera_target(spec: str) -> tuple[int | str, str, bool]:
    """(what cv2.VideoCapture opens, the name used in messages, whether it is live)."""
    rest = "0" if spec == "camera" else spec.removeprefix("camera:")
    if rest.isdigit():
        return int(rest), f"camera {int(rest)}", True
    if "://" in rest:
        return rest, rest, True
    if not rest:
        raise SourceError(f"{spec}: name a camera (camera:0), a video file or a stream URL")
    path = Path(rest)
    if not path.exists():
        raise SourceError(f"{rest}: no such video file (check the path)")
    if path.is_dir():
        raise SourceError(f"{rest}: is a folder, not a video file (for images use images:{rest})")
    return rest, rest, False


def _capture(target: int | str, name: str) -> cv2.VideoCapture:
    """An opened VideoCapture, or SourceError naming the device and the alternatives."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # our error says it all
    try:
        if isinstance(target, str) and "://" in target:
            ms = int(OPEN_TIMEOUT_S * 1000)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
            cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
        else:
            cap = cv2.VideoCapture(target)
    finally:
        cv2.utils.logging.setLogLevel(level)
    if cap.isOpened():
        return cap
    cap.release()
    if isinstance(target, int):
        raise SourceError(
            f"{name}: no camera could be opened (none at index {target} on this machine, or it "
            f"is busy; alternatives: {ALTERNATIVES})"
        )
    if "://" in str(target):
        raise SourceError(
            f"{name}: cannot open the stream within {OPEN_TIMEOUT_S:.0f} s (is the server up and "
            "the URL right? OpenCV's FFmpeg reads HTTP MJPEG and RTSP)"
        )
    raise SourceError(
        f"{name}: OpenCV cannot decode this file as a video (is it one? avi, mp4, mkv... "
        "FFmpeg formats are read)"
    )


class CameraStream(FrameStream):
    """OpenCV capture on its own thread, frames handed over through a bounded queue."""

    def __init__(
        self,
        target: int | str,
        name: str,
        *,
        live: bool,
        fps: float | None = None,
        skip: int = 0,
        queue: int | None = None,
    ) -> None:
        if fps is not None and not fps > 0:
            raise SourceError(f"{name}: `fps` must be a positive rate, got {fps}")
        self.name = name
        self.live = live
        self.fps = fps
        self.realtime = not live and fps is not None  # a file played at its own frame rate
        self.drop_oldest = live or self.realtime
        self.dropped = self.skipped = 0
        self.frames_read = 0
        self._cap = _capture(target, name)
        native = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.native_fps = native if 0 < native < 1000 else 25.0  # some streams report 0
        size = queue or (LIVE_QUEUE if self.drop_oldest else FILE_QUEUE)
        self._maxsize = size
        self._queue: collections.deque[Frame] = collections.deque()
        self._cond = threading.Condition()
        self._ended = False
        self._error: Exception | None = None
        self._stop = threading.Event()
        self._skip = skip
        self._thread = threading.Thread(target=self._read, name=f"capture {name}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the capture thread

    def _read(self) -> None:
        try:
            index = 0
            while index < self._skip and self._cap.grab():  # a resumed file run: skip, no decode
                index += 1
            start, due = time.monotonic(), 0.0
            period = 1.0 / self.fps if self.fps else 0.0
            while not self._stop.is_set():
                ok, image = self._cap.read()
                if not ok or image is None:
                    return
                i, index = index, index + 1
                if self.realtime:  # play the file at its own frame rate
                    t = (i - self._skip) / self.native_fps
                    self._stop.wait(max(0.0, start + t - time.monotonic()))
                else:
                    t = time.monotonic() - start
                if period:
                    if t + 1e-9 < due:
                        self.skipped += 1
                        continue
                    due = due + period if due + period > t else t + period
                self._put(Frame(to_rgb(image), None, i, f"{self.name} frame {i}"))
        except Exception as exc:  # OpenCV raises cv2.error and others: hand them to the learner
            self._error = exc
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def _put(self, frame: Frame) -> None:
        with self._cond:
            if self.drop_oldest:
                if len(self._queue) >= self._maxsize:
                    self._queue.popleft()
                    self.dropped += 1
            else:
                while len(self._queue) >= self._maxsize and not self._stop.is_set():
                    self._cond.wait(0.1)
            self._queue.append(frame)
            self.frames_read += 1
            self._cond.notify_all()

    # ------------------------------------------------------------------ the learner's side

    def batches(self, max_batch: int) -> Iterator[list[Frame | BadRecordError]]:
        """What is waiting (up to ``max_batch``); a file waits for full batches (determinism)."""
        want = max_batch if self.drop_oldest else min(max_batch, self._maxsize)
        while True:
            with self._cond:
                while not self._queue and not self._ended:
                    self._cond.wait(0.1)  # a timeout, so that Ctrl-C is seen while waiting
                if not self.drop_oldest:
                    while len(self._queue) < want and not self._ended:
                        self._cond.wait(0.1)
                if not self._queue:
                    break
                n = min(want, len(self._queue))
                batch: list[Frame | BadRecordError] = [self._queue.popleft() for _ in range(n)]
                self._cond.notify_all()
            yield batch
        if self._error is not None:
            raise SourceError(f"{self.name}: reading frames failed: {self._error}")

    def close(self) -> None:
        """Stop the capture thread and release the device, file or connection."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=OPEN_TIMEOUT_S)
        self._cap.release()
