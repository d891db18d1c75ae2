"""Camera, video, stream and image-folder sources, label policies, and the camera commands.

Real components: videos written with cv2.VideoWriter, MJPEG served over HTTP from a loopback
socket, label lines over a real TCP connection, SQLite run files.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cli.app import app
from spela_stream.errors import SourceError
from spela_stream.features import make_backbone
from spela_stream.model import SpelaMLP
from spela_stream.prequential import Prequential
from spela_stream.sources import Sample
from spela_stream.sources.camera import CameraStream
from spela_stream.sources.frames import Frame, open_frames
from spela_stream.sources.labels import LabelChannel, LabelTrack
from storage import CheckpointStore

COLOURS = {"red": (30, 30, 220), "green": (30, 220, 30), "blue": (220, 30, 30)}  # BGR
NAMES = list(COLOURS)
runner = CliRunner()


def _image(name: str, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    img = np.empty((size, size, 3), np.int16)
    img[:] = COLOURS[name]
    return np.clip(img + rng.integers(-25, 25, img.shape), 0, 255).astype(np.uint8)


def _truth(i: int) -> str:
    return NAMES[(i // 4) % 3]  # runs of 4 frames per class, the classes interleaved


@pytest.fixture
def video(tmp_path: Path) -> Path:
    """36 frames of 32x32 (red, green, blue in runs of 4), MJPG in .avi, at 100 fps."""
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 100, (32, 32))
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    for i in range(36):
        writer.write(_image(_truth(i), rng))
    writer.release()
    return path


@pytest.fixture
def track(tmp_path: Path) -> Path:
    path = tmp_path / "labels.txt"
    path.write_text("".join(_truth(i) + "\n" for i in range(36)))
    return path


def _dominant(frame: Frame) -> str:
    """The colour name of a frame from its mean RGB."""
    r, g, b = frame.image.reshape(-1, 3).mean(axis=0)
    return ["red", "green", "blue"][int(np.argmax([r, g, b]))]


# ---------------------------------------------------------------- sources


def test_video_file_is_read_frame_by_frame_without_drops(video: Path) -> None:
    stream = CameraStream(str(video), str(video), live=False)
    frames = [f for batch in stream.batches(8) for f in batch]
    stream.close()
    assert [f.index for f in frames if isinstance(f, Frame)] == list(range(36))
    assert all(isinstance(f, Frame) and _dominant(f) == _truth(f.index) for f in frames)
    assert frames[5].where == f"{video} frame 5"
    assert stream.dropped == 0 and stream.skipped == 0


def test_live_source_drops_the_oldest_frames_and_counts_them(video: Path) -> None:
    # A learner that takes nothing until capture ends: the bounded queue keeps the newest 4.
    stream = CameraStream(str(video), "live", live=True, queue=4)
    stream._thread.join(timeout=10)
    frames = [f for batch in stream.batches(32) for f in batch]
    stream.close()
    assert [f.index for f in frames if isinstance(f, Frame)] == [32, 33, 34, 35]
    assert stream.dropped == 32 and stream.frames_read == 36


def test_fps_plays_a_file_in_real_time_and_samples_it(video: Path) -> None:
    backbone = make_backbone("none", size=4)
    with open_frames(f"camera:{video}", backbone, fps=25) as src:  # the file runs at 100 fps
        samples = list(src)
    assert [s.index for s in samples] == list(range(0, 36, 4))
    assert src.frames.skipped == 27


def test_mjpeg_over_http_is_read_through_camera_url() -> None:
    rng = np.random.default_rng(1)
    images = [_image(_truth(i), rng) for i in range(12)]
    port = _serve_mjpeg(images)
    stream = CameraStream(f"http://127.0.0.1:{port}/feed.mjpg", "feed", live=True, queue=64)
    frames = [f for batch in stream.batches(32) for f in batch]
    stream.close()
    assert [f.index for f in frames if isinstance(f, Frame)] == list(range(12))
    assert all(isinstance(f, Frame) and _dominant(f) == _truth(f.index) for f in frames)


def _serve_mjpeg(images: list[np.ndarray]) -> int:
    """Serve ``images`` once as multipart/x-mixed-replace JPEG over HTTP on a loopback port."""
    srv = socket.create_server(("127.0.0.1", 0))
    port: int = srv.getsockname()[1]

    def run() -> None:
        with srv:
            conn, _ = srv.accept()
            with conn:
                conn.recv(65536)  # the GET request
                conn.sendall(
                    b"HTTP/1.0 200 OK\r\n"
                    b"Content-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n"
                )
                for img in images:
                    data = cv2.imencode(".jpg", img)[1].tobytes()
                    head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                    conn.sendall(head % len(data) + data + b"\r\n")

    threading.Thread(target=run, daemon=True).start()
    return port


def test_image_folder_interleaves_classes_and_reports_bad_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    for name in NAMES:
        (tmp_path / name).mkdir()
        for j in range(6):
            cv2.imwrite(str(tmp_path / name / f"{j:03d}.png"), _image(name, rng))
    (tmp_path / "red" / "broken.png").write_bytes(b"not a png")
    backbone = make_backbone("none", size=4)
    skipped: list[str] = []
    src = open_frames(f"images:{tmp_path}", backbone, on_error=lambda e: skipped.append(e.where))
    samples = list(src)
    assert len(samples) == 18 and len(skipped) == 1
    assert skipped[0].startswith(f"{tmp_path / 'red' / 'broken.png'} (image ")
    first = [s.y for s in samples[:6]]
    assert len(set(first)) > 1  # not class by class
    assert sorted(s.y for s in samples) == sorted(NAMES * 6)
    assert all(s.where.startswith(str(tmp_path / str(s.y))) for s in samples)


# ---------------------------------------------------------------- label policies


def test_label_track_reads_lines_and_ranges(tmp_path: Path) -> None:
    lines = tmp_path / "lines.txt"
    lines.write_text("cat\n\n7\ndog\n")
    track = LabelTrack.read(lines)
    assert [track(i) for i in range(5)] == ["cat", None, 7, "dog", None]
    ranges = tmp_path / "ranges.csv"
    ranges.write_text("0,3,cat\n5, 7, dog\n\n7,8,3\n")
    track = LabelTrack.read(ranges)
    assert [track(i) for i in range(9)] == ["cat"] * 3 + [None] * 2 + ["dog"] * 2 + [3, None]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0,3,cat\nfour\n", "line 2: 'four' is not start,end,label"),
        ("0,3,cat\n2,5,dog\n", "line 2: range 2,5 overlaps"),
        ("4,2,cat\n", "line 1: end 2 must be after start 4"),
        ("0,2,\n", "line 1: the range 0,2 has no label"),
        ("\n\n", "the label track is empty"),
    ],
)
def test_label_track_errors_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(SourceError, match=message):
        LabelTrack.read(path)


def _say(sock: socket.socket, line: str) -> str:
    sock.sendall(line.encode() + b"\n")
    return sock.makefile("r").readline().strip()


def test_label_channel_switches_classes_in_a_running_learner(video: Path) -> None:
    channel = LabelChannel(0)
    sock = socket.create_connection(("127.0.0.1", channel.port))
    loop = Prequential(SpelaMLP(hidden=(32,), seed=0))
    backbone = make_backbone("none", size=4)
    # Teach frames 8..19 as what they show (blue, red, green) over the socket, then stop.
    script = {8: "blue", 12: "red", 16: "green", 20: "-"}
    answers = []

    def teaching(src: Iterator[Sample]) -> Iterator[Sample]:
        for n, sample in enumerate(src):
            yield sample
            if n + 1 in script:
                answers.append(_say(sock, script[n + 1]))

    with open_frames(f"camera:{video}", backbone, labels=channel) as src:
        preds = [loop.step(s.x, s.y, s.index, s.where).label for s in teaching(iter(src))]
    sock.close()
    channel.close()
    assert answers == ["teaching blue", "teaching red", "teaching green", "predicting"]
    assert loop.learned == 12 and loop.model.labels == ["blue", "red", "green"]
    assert preds[:8] == [None] * 8  # nothing taught yet
    later = [(p, _truth(i)) for i, p in enumerate(preds) if i >= 20]
    assert sum(p == t for p, t in later) >= 14  # of 16: the taught classes are recognised


# ---------------------------------------------------------------- the command line


def test_learn_a_video_then_eval_and_predict_it(tmp_path: Path, video: Path, track: Path) -> None:
    db = tmp_path / "runs.db"
    args = ["learn", "--source", f"camera:{video}", "--db", str(db), "--size", "32"]
    result = runner.invoke(app, [*args, "--labels", str(track), "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["kind"] == "summary" and summary["samples"] == 36
    assert summary["dropped"] == 0 and summary["frames_read"] == 36
    assert summary["accuracy"] > 0.8  # measured 0.94: the first frames of each class miss
    with CheckpointStore(db, create=False) as store:
        info = store.run("run-1")
    assert info.config["frames"] == {"backbone": "efficientnet-lite0", "size": 32}
    assert info.config["hidden"] == [1024]
    assert info.config["input_readout"] == 2000  # frames through a backbone: on by default
    result = runner.invoke(
        app, ["eval", "--source", f"camera:{video}", "--labels", str(track), "--db", str(db)]
    )
    assert result.exit_code == 0, result.output
    assert "accuracy 1.0000" in result.stdout
    result = runner.invoke(
        app, ["predict", "--source", f"camera:{video}", "--db", str(db), "--output", "json"]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["label"] for r in rows] == [_truth(i) for i in range(36)]


def test_record_one_class_per_run_then_predict(tmp_path: Path) -> None:
    """Teachable Machine: --label red on one clip, --resume --label green on another, then
    a run with no label predicts each frame of a mixed clip (a JSON line each)."""
    rng = np.random.default_rng(3)
    clips = {}
    for name, frames in {"red": ["red"] * 12, "green": ["green"] * 12, "mixed": NAMES}.items():
        path = tmp_path / f"{name}.avi"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (32, 32))
        for colour in frames:
            writer.write(_image(colour, rng))
        writer.release()
        clips[name] = path
    db = ["--db", str(tmp_path / "tm.db"), "--backbone", "none", "--size", "8"]
    result = runner.invoke(app, ["learn", "-s", f"camera:{clips['red']}", *db, "--label", "red"])
    assert result.exit_code == 0, result.output
    db = db[:2]  # a resumed run keeps its backbone
    args = ["learn", "--resume", "-s", f"camera:{clips['green']}", *db, "--label", "green"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["learn", "--resume", "-s", f"camera:{clips['mixed']}", *db])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["label"] for r in rows][:2] == ["red", "green"]
    assert rows[2]["label"] in ("red", "green")  # blue was never taught
    assert [r["index"] for r in rows] == [0, 1, 2] and rows[0]["kind"] == "prediction"
    result = runner.invoke(app, ["learn", "--resume", "-s", f"camera:{clips['red']}", *db])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 12
    args = ["learn", "--resume", "-s", f"camera:{clips['green']}", *db, "--changes"]
    result = runner.invoke(app, args)  # 12 green frames: one line, at the first
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["label"] for line in result.stdout.splitlines()] == ["green"]
    result = runner.invoke(app, args)  # the file the last checkpoint read: go on after it
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and "reading camera:" in result.stderr


def test_images_folder_learns_and_evaluates(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    root = tmp_path / "pics"
    for name in NAMES:
        (root / name).mkdir(parents=True)
        for j in range(8):
            cv2.imwrite(str(root / name / f"{j}.jpg"), _image(name, rng))
    db = ["--db", str(tmp_path / "img.db")]
    learn = ["learn", "-s", f"images:{root}", *db, "--backbone", "none", "--size", "8"]
    result = runner.invoke(app, learn)
    assert result.exit_code == 0, result.output
    assert "after 24 samples" in result.stdout
    result = runner.invoke(app, ["eval", "-s", f"images:{root}", *db, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["accuracy"] == 1.0


def test_no_camera_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "none.db"
    result = runner.invoke(app, ["learn", "--source", "camera", "--db", str(db)])
    assert result.exit_code == 1
    assert (
        "Error: camera 0: no camera could be opened (none at index 0 on this machine, or it is "
        "busy; alternatives: a video file camera:PATH, a stream camera:URL, images:DIR)"
    ) in result.stderr
    assert not db.exists()  # nothing is left behind for a camera that is not there


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--source", "camera:missing.avi"], 1, "missing.avi: no such video file"),
        (["--source", "camera:http://127.0.0.1:1/x.mjpg"], 1, "x.mjpg: cannot open the stream"),
        (["--source", "images:nowhere"], 1, "images:nowhere: no such folder"),
        (["--labels", "nolabels.txt"], 1, "nolabels.txt: cannot read the label track"),
        (["--fps", "5", "--source", "images:."], 1, "--fps samples a video or camera"),
        (["--label", "a", "--label-port", "0"], 2, "--label and --label-port: give one"),
        (["--backbone", "resnet"], 2, "unknown backbone 'resnet'"),
    ],
)
def test_bad_camera_options(
    tmp_path: Path, video: Path, args: list[str], code: int, message: str
) -> None:
    base = ["learn", "--db", str(tmp_path / "x.db"), "--source", f"camera:{video}"]
    result = runner.invoke(app, [*base, *args])
    assert result.exit_code == code, result.output
    assert message in result.stderr


def test_a_resumed_run_keeps_its_backbone(tmp_path: Path, video: Path) -> None:
    db = ["--db", str(tmp_path / "b.db"), "--source", f"camera:{video}"]
    result = runner.invoke(app, ["learn", *db, "--backbone", "none", "--label", "x"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["learn", "--resume", *db, "--backbone", "efficientnet-lite0"])
    assert result.exit_code == 2
    assert "embeds frames with none at 28 px, and a run keeps its backbone" in result.stderr
    result = runner.invoke(app, ["eval", "--db", str(tmp_path / "b.db"), "-s", "builtin:mnist"])
    assert result.exit_code == 2
    assert "learned frames through a backbone" in result.stderr


def _input_readout(db: Path, name: str) -> int:
    with CheckpointStore(db, create=False) as store:
        saved = store.run(name).config["input_readout"]
    assert isinstance(saved, int)
    return saved


def test_input_readout_defaults_on_for_backbone_frames_only(tmp_path: Path, video: Path) -> None:
    """2000 on a new run of frames through EfficientNet-Lite0; --input-readout 0 turns it off;
    raw pixels (--backbone none) and tabular files default off; a resumed run keeps its own."""
    db = tmp_path / "r.db"
    frames = ["learn", "-s", f"camera:{video}", "--db", str(db), "--size", "32", "--label", "x"]
    for args in ([], ["--input-readout", "0"], ["--backbone", "none", "--size", "8"],
                 ["--input-readout", "500", "--backbone", "none", "--size", "8"]):  # fmt: skip
        result = runner.invoke(app, [*frames, *args, "--quiet"])
        assert result.exit_code == 0, result.output
    assert [_input_readout(db, f"run-{i}") for i in (1, 2, 3, 4)] == [2000, 0, 0, 500]
    csv = tmp_path / "t.csv"
    csv.write_text("".join(f"{i % 3},{i % 5},{i % 2}\n" for i in range(20)))
    result = runner.invoke(app, ["learn", "-s", str(csv), "--db", str(db), "--quiet"])
    assert result.exit_code == 0, result.output
    assert _input_readout(db, "run-5") == 0
    result = runner.invoke(app, ["learn", "--resume", "--run", "run-1", "--db", str(db), "--quiet"])
    assert result.exit_code == 0, result.output  # the video read again, its saved setting kept
    assert _input_readout(db, "run-1") == 2000
    resume = ["learn", "--resume", "--run", "run-2", "--db", str(db), "--input-readout", "2000"]
    result = runner.invoke(app, resume)
    assert result.exit_code == 2
    assert "--input-readout cannot change a resumed run (run 'run-2' keeps" in result.stderr
    result = runner.invoke(app, [*frames, "--input-readout", "-1"])
    assert result.exit_code == 2 and "--input-readout" in result.stderr


def test_label_port_teaches_a_running_learner_process(tmp_path: Path) -> None:
    """The real command: a video played in real time (--fps), taught over its label port."""
    import os
    import subprocess
    import sys

    path = tmp_path / "slow.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 20, (32, 32))
    rng = np.random.default_rng(5)
    for _ in range(50):  # 2.5 s at its own 20 fps
        writer.write(_image("red", rng))
    writer.release()
    args = ["learn", "-s", f"camera:{path}", "--db", str(tmp_path / "p.db"), "--json"]
    args += ["--backbone", "none", "--size", "8", "--fps", "20", "--label-port", "0"]
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.app", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    while line and "label channel on" not in line:
        line = proc.stderr.readline()
    port = int(line.split("127.0.0.1:")[1].split(":")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        assert _say(sock, "red") == "teaching red"
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    rows = [json.loads(x) for x in out.splitlines()]
    summary = rows[-1]
    assert summary["kind"] == "summary" and summary["frames_read"] == 50
    assert summary["learned"] > 25  # taught within the first half of the clip
    predicted = [r for r in rows if r["kind"] == "prediction"]
    assert len(predicted) + summary["learned"] == 50 - summary["dropped"]
    assert "classes ['red']" in err


def test_the_label_channel_survives_any_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12 defect 12: resets, garbage, half-closes and overlong lines kill no thread, and a
    later client is still answered (real sockets on 127.0.0.1)."""
    import socket as _socket
    import struct
    import threading as _threading

    from spela_stream.sources.labels import LabelChannel

    crashes: list[BaseException | None] = []
    monkeypatch.setattr(_threading, "excepthook", lambda args: crashes.append(args.exc_value))
    channel = LabelChannel(0)
    address = ("127.0.0.1", channel.port)
    try:
        for i in range(50):  # a name, then close without reading: a reset
            with _socket.create_connection(address, timeout=10) as sock:
                sock.sendall(b"cat\n" * 50)
                if i % 2:
                    sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_LINGER, struct.pack("ii", 1, 0))
        with _socket.create_connection(address, timeout=10) as sock:  # half-close
            sock.sendall(b"\xff\xfe garbage \x00\n")
            sock.shutdown(_socket.SHUT_WR)
            sock.recv(1024)
        with _socket.create_connection(address, timeout=10) as sock:  # overlong, then a name
            sock.sendall(b"x" * 100_000 + b"\ndog\n")
            fh = sock.makefile("rb")
            replies = [fh.readline(), fh.readline()]
        assert replies[1] == b"teaching dog\n", replies
        with _socket.create_connection(address, timeout=10) as sock:
            sock.sendall(b"-\n")
            assert sock.makefile("rb").readline() == b"predicting\n"
        assert channel.current is None
    finally:
        channel.close()
    assert crashes == []
