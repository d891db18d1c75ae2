"""The summary every ``learn`` path but the frames' (``storage.frames_run``) prints.

The file, camera and TCP paths each open ``storage.opening.learning`` (the store, the stop guard
and the run the options name), build their stream and hand it to ``storage.run.finish``, which
drives the library's ``Run`` (the lifecycle: checkpoints, bad records, the writer lease).
"""

from __future__ import annotations

from spela_stream.config import LearnOptions
from spela_stream.display import summary_lines
from storage.run import Run

from .output import Progress

__all__ = ["summary_line"]


def summary_line(run: Run, opts: LearnOptions, progress: Progress, stopped: str | None) -> None:
    """The summary of a file, stdin or socket run: accuracy on stdout, the counts on stderr."""
    out, err = summary_lines(run.loop.report(), run.source, run.name, opts.db, stopped,
                             json_out=opts.json_out)  # fmt: skip
    print(out, flush=opts.json_out)
    progress.log(err)
