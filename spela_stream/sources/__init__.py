"""Stream readers: each turns a file, stdin or a builtin stream into ``Sample``s.

``open_source(spec)`` (``opener``) picks the reader; the readers know nothing of models. One
module per kind: ``delimited`` (CSV/TSV, with ``numparse`` for speed), ``jsonl``, ``arff``,
``libsvm``, ``arrays`` (npy/npz/IDX), ``builtin``; ``base`` holds Sample and the Source base,
``textio`` the line reading shared by the text formats (files, gzip, stdin). Image streams
(``frames.open_frames``: ``camera``, a video, a URL, ``images:DIR``) go through a backbone
(``spela_stream.features``): ``camera``, ``images``, ``labels`` (the label policies), ``frames``.
"""

from .base import FORMATS, BadRecordError, Sample, Source
from .opener import open_source

__all__ = ["FORMATS", "BadRecordError", "Sample", "Source", "open_source"]
