"""``learn`` on frames: a camera, a video, a stream or ``images:DIR``, through a frozen backbone.

Frames pass through the run's frozen backbone (kept in the run's config as ``frames``, so that
``resume``, ``eval`` and ``predict`` embed the same way); a SPELA head learns on the features.
With no label for a frame the learner predicts it and writes a JSON line on ``out`` (with
``changes`` only when the prediction changes). The run opens as every ``learn`` path's does
(``storage.opening.learning``) and is driven to its summary by ``storage.run.finish``.
"""

from __future__ import annotations

import contextlib
from typing import Any, TextIO

import torch

from spela_stream.config import FrameOptions, LearnOptions
from spela_stream.display import Progress, announced, frames_summary_lines, ticking
from spela_stream.features import backbone_spec, frame_model_defaults, make_backbone
from spela_stream.sources.frames import EmbeddedSource, open_frames
from spela_stream.sources.labels import LabelChannel, label_policy

from .opening import learning
from .run import Run, finish

__all__ = ["frames_summary", "learn_frames"]


def learn_frames(opts: LearnOptions, progress: Progress, out: TextIO) -> None:
    """Learn frames test-then-train; frames without a label are predicted and written on
    ``out``, and so is the summary (its counts go to ``progress.log``).

    ``threads`` goes to the backbone's convolutions; the per-sample head learns on one thread
    (memory bound: more threads only slow it, measured 227 against 104 rows/s)."""
    torch.set_num_threads(1)
    fo = opts.input.frames or FrameOptions()
    spec: dict[str, Any] = {}

    def frames(run: Run | None) -> dict[str, Any]:  # the backbone: the run's own, or asked
        spec.update(
            backbone_spec(None if run is None else run.store.run(run.name), fo.backbone, fo.size)
        )
        return {"frames": dict(spec)}

    with (
        learning(opts, progress.log, default_source="camera:0",
                 defaults=frame_model_defaults(fo.backbone), config=frames) as (run, guard),
        contextlib.ExitStack() as stack,
    ):  # fmt: skip
        backbone = make_backbone(spec["backbone"], spec["size"], threads=opts.threads)
        labels = label_policy(fo.label, fo.labels, fo.label_port, log=progress.log)
        if isinstance(labels, LabelChannel):
            stack.callback(labels.close)
        src = open_frames(run.source, backbone, labels=labels, fps=fo.fps, skip=run.skip,
                          on_error=run.on_bad)  # fmt: skip
        stack.enter_context(src)  # a run is made only once its source has opened
        before = (run.loop.samples, run.loop.learned)
        stream = announced(ticking(src, run.loop, progress), run.loop, out=out, changes=fo.changes)
        finish(
            run,
            run.reports(stream, every=opts.every, doubling=True, limit=opts.limit),
            progress,
            guard,
            lambda stopped: frames_summary(run, src, progress, opts, before, stopped, out),
            reading=f"{run.source} through {backbone.name} ({backbone.dim} features)",
        )


def frames_summary(
    run: Run, src: EmbeddedSource, progress: Progress, opts: LearnOptions,
    before: tuple[int, int], stopped: str | None, out: TextIO,
) -> None:  # fmt: skip
    """The summary on ``out`` and the frame counts on ``progress.log``
    (``display.frames_summary_lines``; ``before``: samples and learned when the run opened)."""
    counts = {"frames_read": src.frames_read, "dropped": src.dropped,
              "skipped": src.frames.skipped}  # fmt: skip
    line, err = frames_summary_lines(run.loop.report(), before, counts, run.loop.model.labels,
                                     run.source, run.name, opts.db, stopped,
                                     json_out=opts.json_out)  # fmt: skip
    if line is not None:
        print(line, file=out, flush=opts.json_out)
    progress.log(err)
