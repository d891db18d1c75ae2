"""What every frame stream shares: a ``Frame``, the ``FrameStream`` interface, colour order.

A leaf module: ``camera``, ``images`` and ``frames`` all import it, and it imports none of them.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from ..inputs import Label
from .base import BadRecordError

MAX_BATCH = 32  # frames embedded in one backbone call, when that many are waiting


@dataclass(frozen=True)
class Frame:
    """One image of a stream: RGB pixels (H, W, 3) uint8, its label (or None) and position."""

    image: np.ndarray
    y: Label | None
    index: int  # frames consumed before this one
    where: str  # "video.avi frame 12"


class FrameStream(abc.ABC):
    """Frames in stream order, handed over in batches; counts what it had to drop."""

    name: str
    live: bool = False  # frames arrive in real time (and are dropped when the learner lags)
    labelled: bool = False  # frames carry their own labels (an image folder's class names)
    dropped: int = 0  # frames discarded because the learner fell behind
    skipped: int = 0  # frames passed over by --fps sampling

    @abc.abstractmethod
    def batches(self, max_batch: int) -> Iterator[list[Frame | BadRecordError]]:
        """Lists of 1..max_batch frames (or errors for unreadable ones) in stream order."""

    def close(self) -> None:  # noqa: B027 - a default: streams that hold nothing open keep it
        """Stop reading and release the device or file."""


def to_rgb(image: np.ndarray) -> np.ndarray:
    """OpenCV's BGR (or grey) frame as RGB (H, W, 3) uint8."""
    if image.ndim == 2:
        out: np.ndarray = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        return out
    out = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return out
