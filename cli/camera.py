"""learn, eval and predict from a camera, a video, a stream or images:DIR, through a backbone.

Frames pass through the run's frozen backbone (kept in the run's config as ``frames``, so that
``--resume``, ``eval`` and ``predict`` embed the same way); a SPELA head learns on the features.
With no label for a frame the learner predicts it and prints a JSON line on stdout (with
``--changes`` only when the prediction changes).
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any

import torch

from spela_stream.display import announced, ticking
from spela_stream.errors import ConfigError
from spela_stream.features import backbone_spec, make_backbone
from spela_stream.model import SpelaMLP
from spela_stream.sources import Source
from spela_stream.sources.frames import EmbeddedSource, is_frame_spec, open_frames
from spela_stream.sources.labels import FixedLabel, LabelChannel, LabelPolicy, LabelTrack
from storage import CheckpointStore
from storage.records import RunInfo
from storage.run import Run

from .learning import finish, learning
from .options import FrameOptions, Input, LearnOptions
from .output import Progress, plural, report_json

# Measured (benchmarks/camera_bench.py, 5,000 MNIST frames through EfficientNet-Lite0): one
# layer of 1024 leads the model's default two on backbone features (prequential .902 against
# .896 after 5,000 frames, .843 against .810 after 1,000) and learns twice as fast; the model
# keeps its own default.
CAMERA_HIDDEN = (1024,)


def wants_frames(opts: LearnOptions) -> bool:
    """True when ``learn`` reads frames: a camera/images source, a camera option, or a resumed
    camera run without ``--source``."""
    fo = opts.input.frames
    if is_frame_spec(opts.input.source) or (fo is not None and fo.given()):
        return True
    if opts.resume and not opts.input.source and opts.db.exists():
        with CheckpointStore(opts.db, create=False, readonly=True) as store:
            latest = store.latest_run() if opts.run is None else store.run(opts.run)
            return latest is not None and "frames" in latest.config
    return False


def label_policy(fo: FrameOptions, progress: Progress) -> LabelPolicy | None:
    """``--label``, ``--labels`` or ``--label-port`` (at most one), or None: predict."""
    given = [f for f in ("--label", "--labels", "--label-port") if f in fo.given()]
    if len(given) > 1:
        raise ConfigError(f"{' and '.join(given)}: give one way of labelling frames")
    if fo.label is not None:
        return FixedLabel(fo.label)
    if fo.labels is not None:
        return LabelTrack.read(fo.labels)
    if fo.label_port is not None:
        channel = LabelChannel(fo.label_port)
        progress.log(
            f"label channel on 127.0.0.1:{channel.port}: send a line NAME to teach NAME, - to "
            f"stop (e.g. nc 127.0.0.1 {channel.port})"
        )
        return channel
    return None


def open_input(inp: Input, run: RunInfo, model: SpelaMLP | None = None) -> Source:
    """For eval and predict: a frames source through the run's backbone, else ``inp.open``."""
    if not is_frame_spec(inp.source):
        if "frames" in run.config:
            raise ConfigError(
                f"run {run.name!r} learned frames through a backbone; score it on a camera:PATH "
                "or images:DIR source"
            )
        return inp.open(model=model)
    fo = inp.frames or FrameOptions()
    spec = backbone_spec(run)
    labels = LabelTrack.read(fo.labels) if fo.labels is not None else None
    return open_frames(inp.source, make_backbone(spec["backbone"], spec["size"]), labels=labels)


# ---------------------------------------------------------------- learn


def learn(opts: LearnOptions) -> None:
    """Learn frames test-then-train; frames without a label are predicted and printed.

    ``--threads`` goes to the backbone's convolutions; the per-sample head learns on one thread
    (memory bound: more threads only slow it, measured 227 against 104 rows/s)."""
    torch.set_num_threads(1)
    fo = opts.input.frames or FrameOptions()
    progress = Progress(json_out=opts.json_out, quiet=opts.quiet, out=sys.stdout)
    spec: dict[str, Any] = {}

    def frames(run: Run | None) -> dict[str, Any]:  # the backbone: the run's own, or asked
        spec.update(
            backbone_spec(None if run is None else run.store.run(run.name), fo.backbone, fo.size)
        )
        return {"frames": dict(spec)}

    with (
        learning(opts, progress, default_source="camera:0", defaults={"hidden": CAMERA_HIDDEN},
                 config=frames) as (run, guard),
        contextlib.ExitStack() as stack,
    ):  # fmt: skip
        backbone = make_backbone(spec["backbone"], spec["size"], threads=opts.threads)
        labels = label_policy(fo, progress)
        if isinstance(labels, LabelChannel):
            stack.callback(labels.close)
        src = open_frames(run.source, backbone, labels=labels, fps=fo.fps, skip=run.skip,
                          on_error=run.on_bad)  # fmt: skip
        stack.enter_context(src)  # a run is made only once its source has opened
        before = (run.loop.samples, run.loop.learned)
        stream = announced(
            ticking(src, run.loop, progress), run.loop, out=sys.stdout, changes=fo.changes
        )
        finish(
            run,
            run.reports(stream, every=opts.every, doubling=True, limit=opts.limit),
            progress,
            guard,
            lambda stopped: _summary(run, src, progress, opts, before, stopped),
            reading=f"{run.source} through {backbone.name} ({backbone.dim} features)",
        )


def _summary(
    run: Run, src: EmbeddedSource, progress: Progress, opts: LearnOptions,
    before: tuple[int, int], stopped: str | None,
) -> None:  # fmt: skip
    """The summary and the frame counts. stdout keeps one format: with ``--json`` a summary
    object; else the accuracy line only when this run learned frames and predicted none (the
    predictions, JSON lines, are then the product, and the accuracy goes to stderr)."""
    loop = run.loop
    r = loop.report()
    learned = r.learned - before[1]
    predicted = r.samples - before[0] - learned
    frames = {"frames_read": src.frames_read, "dropped": src.dropped}
    frames["skipped"] = src.frames.skipped
    if opts.json_out:
        print(json.dumps({**json.loads(report_json(r, kind="summary")), **frames}), flush=True)
    elif learned and not predicted:
        print(f"accuracy {r.accuracy:.4f} after {plural(r.samples, 'sample')} of {run.source}")
    why = f"stopped by {stopped}" if stopped else "done"
    progress.log(
        f"{why}: {plural(r.samples, 'frame')} ({r.learned} learned, "
        f"{r.samples - r.learned} predicted), "
        f"accuracy {r.accuracy:.4f}, "
        f"{src.dropped} dropped (the learner fell behind), {src.frames.skipped} passed over by "
        f"--fps; classes {loop.model.labels}; checkpoint of run {run.name!r} in {opts.db}"
    )
