"""Benchmark of the camera learner on real digits: a video file, a live MJPEG stream, raw pixels.

The MNIST test digits (the package's embedded copy of ``shared/data/mnist-test``) are rendered as
RGB frames (28 px upscaled to the backbone's 112 px), encoded into a real MJPG ``.avi`` with a
label track, and served as a live MJPEG-over-HTTP stream from a loopback socket. Each is learned
through the camera source and the frozen EfficientNet-Lite0 by a SPELA head, one frame at a
time, test-then-train; beside them, the same frames embedded straight from the arrays (what the
camera path loses to encoding, decoding, queueing), other heads on those features, and SPELA on
the raw pixels.

    python -m benchmarks.camera_bench                 # 5,000 frames (16-19 min measured on 2
                                                      # cores shared with other jobs, load 5-8;
                                                      # a quiet machine should need a third)
    python -m benchmarks.camera_bench --frames 1000   # a quick look

The live stream is paced at ``--stream-fps`` (default: 90% of the rate the video file run
reached), so the learner keeps up and drops little; frames it cannot keep up with are dropped
and counted. A second stream of ``--overload-frames`` digits, sent ten times faster than the
learner learns, shows the drops: the queue stays bounded, the oldest frames go, each is counted.
Figures go to stdout as markdown and to benchmarks/results/camera_bench.md/.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from benchmarks.baselines import best_backprop, prequential_river_softmax
from spela_stream.datasets import load_mnist
from spela_stream.features import Backbone, make_backbone
from spela_stream.model import SpelaMLP
from spela_stream.prequential import Prequential
from spela_stream.sources.frames import MAX_BATCH, open_frames
from spela_stream.sources.labels import LabelTrack

RESULTS = Path(__file__).resolve().parent / "results"
VIDEO_FPS = 30
MARKS = (1000, 5000)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def render(images: np.ndarray, size: int) -> np.ndarray:
    """MNIST rows (n, 784) in 0..255 -> RGB frames (n, size, size, 3) uint8."""
    out = np.empty((len(images), size, size, 3), np.uint8)
    for i, row in enumerate(images):
        grey = row.reshape(28, 28).astype(np.uint8)
        out[i] = cv2.cvtColor(cv2.resize(grey, (size, size), cv2.INTER_LINEAR), cv2.COLOR_GRAY2RGB)
    return out


def write_video(frames: np.ndarray, labels: Sequence[int], folder: Path) -> tuple[Path, Path]:
    """An MJPG .avi of the frames and a label track (a line per frame)."""
    video, track = folder / "digits.avi", folder / "digits.labels"
    size = frames.shape[1]
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), VIDEO_FPS, (size, size))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    track.write_text("".join(f"{y}\n" for y in labels))
    return video, track


def serve_mjpeg(frames: np.ndarray, fps: float) -> int:
    """Serve the frames once, paced at ``fps``, as multipart JPEG over HTTP on a loopback port."""
    srv = socket.create_server(("127.0.0.1", 0))
    port: int = srv.getsockname()[1]
    jpegs = [cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR))[1].tobytes() for f in frames]

    def run() -> None:
        with srv:
            conn, _ = srv.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(
                    b"HTTP/1.0 200 OK\r\n"
                    b"Content-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n"
                )
                start = time.monotonic()
                for i, data in enumerate(jpegs):
                    time.sleep(max(0.0, start + i / fps - time.monotonic()))
                    head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                    conn.sendall(head % len(data) + data + b"\r\n")

    threading.Thread(target=run, daemon=True).start()
    return port


def _marks(reports: Iterable[Any], n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    last = None
    for r in reports:
        last = r
        for m in (*MARKS, n):
            if r.samples == m and m <= n:
                out[f"acc@{m}"] = r.accuracy
    if last is not None:
        out["accuracy"] = last.accuracy
        out["learned"] = last.learned
    return out


def learn_camera(
    spec: str, backbone: Backbone, track: Path, n: int, hidden: tuple[int, ...]
) -> dict[str, Any]:
    """Learn a camera:... source through the backbone; accuracy marks, frames/s, drops."""
    loop = Prequential(SpelaMLP(hidden=hidden))
    start = time.perf_counter()
    with open_frames(spec, backbone, labels=LabelTrack.read(track)) as src:
        out = _marks(loop.run(src, every=1000), n)
        seconds = time.perf_counter() - start
        out |= {"frames_read": src.frames.frames_read, "dropped": src.dropped}  # type: ignore[attr-defined]
    out["fps"] = loop.samples / seconds
    return out


def embed_direct(frames: np.ndarray, backbone: Backbone) -> tuple[np.ndarray, float]:
    """The frames embedded straight from the arrays, MAX_BATCH at a time: (features, seconds)."""
    start = time.perf_counter()
    feats = np.concatenate(
        [backbone.embed(frames[i : i + MAX_BATCH]) for i in range(0, len(frames), MAX_BATCH)]
    )
    return feats, time.perf_counter() - start


def learn_rows(X: np.ndarray, y: Sequence[int], hidden: tuple[int, ...]) -> dict[str, Any]:
    """SPELA, one row at a time, test-then-train: accuracy marks and rows/s of the head."""
    loop = Prequential(SpelaMLP(hidden=hidden))
    start = time.perf_counter()
    out = _marks(loop.run(zip(X, y, strict=True), every=1000), len(X))
    out["rows_per_s"] = len(X) / (time.perf_counter() - start)
    return out


def _prefix_accuracy(X: np.ndarray, y: Sequence[int], run: Any, n: int) -> dict[str, Any]:
    out = {f"acc@{m}": run(X[:m], y[:m])["accuracy"] for m in MARKS if m < n}
    full = run(X[:n], y[:n])
    out[f"acc@{n}"] = full["accuracy"]
    return out | {
        "accuracy": full["accuracy"],
        "detail": {k: v for k, v in full.items() if k != "grid"},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=5000, help="MNIST test digits to stream")
    ap.add_argument("--size", type=int, default=112, help="frame size in px (backbone input)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the backbone")
    ap.add_argument("--stream-fps", type=float, default=None, help="pace of the live stream")
    ap.add_argument(
        "--overload-frames", type=int, default=1000, help="digits of the 10x-too-fast stream"
    )
    ap.add_argument("--no-baselines", action="store_true", help="skip backprop and River heads")
    a = ap.parse_args()
    started = time.perf_counter()
    n = a.frames
    torch.set_num_threads(1)  # the per-sample heads; the backbone embeds on --threads
    X, y_arr = load_mnist(n)
    y = [int(v) for v in y_arr]
    frames = render(X, a.size)
    lite0 = make_backbone("efficientnet-lite0", a.size, threads=a.threads)
    result: dict[str, Any] = {
        "frames": n,
        "size": a.size,
        "machine": f"{platform.machine()}, torch {torch.__version__}, backbone on {a.threads} "
        "threads, heads on 1",
        "rows": {},
        "load_average_at_start": round(os.getloadavg()[0], 2),
        "args": " ".join(sys.argv[1:]),
    }
    rows: dict[str, dict[str, Any]] = result["rows"]
    with tempfile.TemporaryDirectory() as tmp:
        video, track = write_video(frames, y, Path(tmp))
        log(f"wrote {n} frames to {video} ({video.stat().st_size / 2**20:.1f} MiB, MJPG)")

        feats, seconds = embed_direct(frames, lite0)
        log(f"direct: {n / seconds:.0f} frames/s through the backbone alone")
        for hidden in ((1024,), (1024, 1024)):
            name = f"arrays -> lite0 -> SPELA {'x'.join(map(str, hidden))}"
            r = learn_rows(feats, y, hidden)
            r["fps"] = n / (seconds + n / r["rows_per_s"])
            rows[name] = r
            log(f"{name}: {r}")

        video_run = learn_camera(f"camera:{video}", lite0, track, n, (1024,))
        rows["video file -> lite0 -> SPELA 1024"] = video_run
        log(f"video: {video_run}")

        pace = a.stream_fps or round(0.9 * video_run["fps"], 1)
        port = serve_mjpeg(frames, pace)
        r = learn_camera(f"camera:http://127.0.0.1:{port}/digits.mjpg", lite0, track, n, (1024,))
        r["stream_fps"] = pace
        rows[f"MJPEG stream at {pace:g} fps -> lite0 -> SPELA 1024"] = r
        log(f"stream: {r}")

        over = min(n, a.overload_frames)
        if over:  # a stream far faster than the learner: frames must be dropped, and counted
            fast = round(10 * video_run["fps"], 1)
            port = serve_mjpeg(frames[:over], fast)
            url = f"camera:http://127.0.0.1:{port}/digits.mjpg"
            r = learn_camera(url, lite0, track, over, (1024,))
            r["stream_fps"] = fast
            rows[f"MJPEG stream at {fast:g} fps (10x the learner), {over:,} digits"] = r
            log(f"overloaded stream: {r}")

        raw = make_backbone("none", 28)
        r = learn_camera(f"camera:{video}", raw, track, n, (1024, 1024))
        rows["video file -> raw RGB 28 px -> SPELA 1024x1024"] = r
        log(f"video raw: {r}")

    for hidden in ((1024,), (1024, 1024)):
        name = f"raw pixels (784) -> SPELA {'x'.join(map(str, hidden))}"
        rows[name] = learn_rows(X, y, hidden)
        log(f"{name}: {rows[name]}")
    if not a.no_baselines:
        rows["arrays -> lite0 -> backprop 1024 (best lr)"] = _prefix_accuracy(
            feats, y, lambda F, t: best_backprop(F, t, (1024,)), n
        )
        rows["arrays -> lite0 -> River SoftmaxRegression"] = _prefix_accuracy(
            feats, y, prequential_river_softmax, n
        )
    result["load_average_at_end"] = round(os.getloadavg()[0], 2)
    result["seconds"] = round(time.perf_counter() - started, 1)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "camera_bench.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    md = markdown(result)
    (RESULTS / "camera_bench.md").write_text(md)
    print(md)


def markdown(result: dict[str, Any]) -> str:
    """The results as a markdown table."""
    n = result["frames"]
    marks = [m for m in MARKS if m < n] + [n]
    head = "| path | " + " | ".join(f"acc @ {m:,}" for m in marks)
    head += " | acc at end | learned | frames/s | dropped |"
    lines = [
        f"# Camera learner on {n:,} MNIST test digits ({result['size']} px RGB frames)",
        "",
        f"Machine: {result['machine']}; 1-minute load average {result['load_average_at_start']}"
        f" at the start, {result['load_average_at_end']} at the end (2 cores; above 2 means"
        f" other work shared them), {result['seconds']:.0f} s in all.",
        f"Command: `python -m benchmarks.camera_bench {result['args']}`.",
        "Prequential accuracy (predict, then learn, one frame at a time), cumulative.",
        "",
        head,
        "|" + "---|" * (len(marks) + 5),
    ]
    for name, r in result["rows"].items():
        accs = [r.get(f"acc@{m}") for m in marks] + [r["accuracy"]]
        cells = ["-" if v is None else f"{v:.4f}" for v in accs]
        cells.append(str(r.get("learned", n)))
        fps = r.get("fps", r.get("rows_per_s"))
        drop = r.get("dropped")
        lines.append(
            f"| {name} | " + " | ".join(cells)
            + f" | {'-' if fps is None else f'{fps:.0f}'} | {'-' if drop is None else drop} |"
        )  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
