"""``images:DIR``: a folder of labelled images, ``DIR/<label>/*.png|jpg|jpeg|bmp|webp``.

The folder name is the label (``7`` reads as the int 7, as in a CSV). Stream order: every image
of every class, sorted by path, then shuffled with a fixed seed (0), so classes are interleaved
the way a prequential run needs (class by class, a learner would be scored on a class it has
never seen at each switch) and a run is the same every time; a resumed run skips what it learned.
Positions read ``DIR/cat/003.png (image 12)``; an image OpenCV cannot decode is a bad record.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import cv2

from ..errors import SourceError
from .base import BadRecordError, label_token
from .framebase import Frame, FrameStream, to_rgb

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
ORDER_SEED = 0


class ImageFolder(FrameStream):
    """Images of ``root/<label>/``, in a seeded shuffle of all classes."""

    labelled = True

    def __init__(self, root: Path, *, skip: int = 0, seed: int = ORDER_SEED) -> None:
        self.name = f"images:{root}"
        if not root.is_dir():
            raise SourceError(
                f"{self.name}: no such folder (give a folder with one subfolder of images per "
                "label: DIR/<label>/*.png)"
            )
        files = [
            (path, cls.name)
            for cls in sorted(p for p in root.iterdir() if p.is_dir())
            for path in sorted(cls.iterdir())
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
        ]
        if not files:
            raise SourceError(
                f"{self.name}: no images in {root}/<label>/ (put each class's .png or .jpg "
                "files in a subfolder named after the class)"
            )
        random.Random(seed).shuffle(files)
        self.files = files
        self.classes = sorted({label for _, label in files})
        self._skip = skip

    def batches(self, max_batch: int) -> Iterator[list[Frame | BadRecordError]]:
        """The images in stream order, ``max_batch`` at a time, decoded as they are needed."""
        for start in range(self._skip, len(self.files), max_batch):
            batch: list[Frame | BadRecordError] = []
            for i in range(start, min(start + max_batch, len(self.files))):
                path, label = self.files[i]
                where = f"{path} (image {i})"
                image = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if image is None:
                    problem = "OpenCV cannot decode this image (a damaged or mislabelled file?)"
                    batch.append(BadRecordError(where, problem, index=i, raw=None))
                    continue
                batch.append(Frame(to_rgb(image), label_token(label), i, where))
            yield batch
