"""learn, eval and predict from a camera, a video, a stream or images:DIR, through a backbone.

Frames pass through the run's frozen backbone (kept in the run's config as ``frames``, so that
``--resume``, ``eval`` and ``predict`` embed the same way); a SPELA head learns on the features.
With no label for a frame the learner predicts it and prints a JSON line on stdout (with
``--changes`` only when the prediction changes).
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import torch

from spela_stream.config import FrameOptions, LearnOptions
from spela_stream.display import announced, frames_summary_lines, ticking
from spela_stream.features import backbone_spec, frame_model_defaults, make_backbone
from spela_stream.sources.frames import EmbeddedSource, open_frames
from spela_stream.sources.labels import LabelChannel, label_policy
from storage.opening import learning
from storage.run import Run, finish

from .output import Progress


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
    """The summary and the frame counts (``display.frames_summary_lines``)."""
    counts = {"frames_read": src.frames_read, "dropped": src.dropped,
              "skipped": src.frames.skipped}  # fmt: skip
    out, err = frames_summary_lines(run.loop.report(), before, counts, run.loop.model.labels,
                                    run.source, run.name, opts.db, stopped,
                                    json_out=opts.json_out)  # fmt: skip
    if out is not None:
        print(out, flush=opts.json_out)
    progress.log(err)
