"""Image streams (``camera...``, ``images:DIR``) read as Samples through a frozen backbone.

A ``FrameStream`` yields batches of ``Frame``s (RGB pixels, a label or None, a position); an
``EmbeddedSource`` takes whatever batch is waiting (up to ``MAX_BATCH`` frames), embeds it in one
backbone call and hands the learner one Sample per frame, labelled by the stream (an image
folder's class) or by the run's label policy (``labels``). ``open_frames`` picks the stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import SourceError
from .base import BadRecordError, OnError, Sample, Source
from .framebase import MAX_BATCH, Frame, FrameStream
from .labels import LabelPolicy

if TYPE_CHECKING:
    from ..features import Backbone

FRAME_SCHEMES = ("camera", "images")


class EmbeddedSource(Source):
    """Samples of backbone features, one per frame; ``labels`` labels frames the stream did not."""

    def __init__(
        self,
        frames: FrameStream,
        backbone: Backbone,
        *,
        labels: LabelPolicy | None = None,
        max_batch: int = MAX_BATCH,
        on_error: OnError | None = None,
    ) -> None:
        super().__init__(frames.name, "frames", on_error=on_error)
        self.frames = frames
        self.backbone = backbone
        self.labels = labels
        self.max_batch = max_batch
        self.frames_read = 0

    @property
    def dropped(self) -> int:
        """Frames the stream discarded because the learner fell behind."""
        return self.frames.dropped

    def _items(self) -> Iterator[Sample | BadRecordError]:
        for batch in self.frames.batches(self.max_batch):
            good = [f for f in batch if isinstance(f, Frame)]
            feats = iter(self.backbone.embed([f.image for f in good]) if good else [])
            for item in batch:
                if isinstance(item, BadRecordError):
                    yield item
                    continue
                self.frames_read += 1
                y = item.y
                if y is None and self.labels is not None:
                    y = self.labels(item.index)  # asked now: a channel's switch applies at once
                yield Sample(next(feats), y, item.index, item.where)

    def close(self) -> None:
        """Stop the stream's reader."""
        self.frames.close()


def is_frame_spec(spec: str) -> bool:
    """True for ``camera``, ``camera:...`` and ``images:DIR``."""
    return spec == "camera" or spec.startswith(tuple(f"{s}:" for s in FRAME_SCHEMES))


def open_frame_stream(spec: str, *, fps: float | None = None, skip: int = 0) -> FrameStream:
    """The FrameStream a spec names: a camera index, a video file, a URL or an image folder."""
    from .camera import CameraStream, camera_target
    from .images import ImageFolder

    if spec.startswith("images:"):
        if fps is not None:
            raise SourceError(f"{spec}: `fps` samples a video or camera, not a folder of images")
        return ImageFolder(Path(spec.removeprefix("images:")), skip=skip)
    if not is_frame_spec(spec):
        raise SourceError(f"{spec}: not a camera or images source (camera:N, camera:PATH, ...)")
    target, name, live = camera_target(spec)
    return CameraStream(target, name, live=live, fps=fps, skip=0 if live else skip)


def open_frames(
    spec: str,
    backbone: Backbone,
    *,
    labels: LabelPolicy | None = None,
    fps: float | None = None,
    skip: int = 0,
    on_error: OnError | None = None,
) -> EmbeddedSource:
    """Open ``spec`` as Samples of ``backbone`` features (skipping ``skip`` frames of a file)."""
    stream = open_frame_stream(spec, fps=fps, skip=skip)
    if stream.labelled and labels is not None:
        stream.close()
        raise SourceError(
            f"{spec}: an image folder labels its images by their folder names; drop --label, "
            "--labels and --label-port"
        )
    return EmbeddedSource(stream, backbone, labels=labels, on_error=on_error)
