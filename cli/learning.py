"""What every ``learn`` path shares: its run from the options, and the summary.

The file, camera and TCP paths each open ``learning`` (the store, the stop guard and the run the
options name, ``storage.opening``), build their stream and hand it to ``storage.run.finish``,
which drives the library's ``Run`` (the lifecycle: checkpoints, bad records, the writer lease).
Nothing here loads torch until a run is made.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from spela_stream.config import LearnOptions
from spela_stream.display import summary_lines
from spela_stream.stopping import StopGuard
from storage import CheckpointStore
from storage.opening import made_db, open_run
from storage.run import Run

from .output import Progress

__all__ = ["learning", "summary_line"]


@contextlib.contextmanager
def learning(
    opts: LearnOptions,
    progress: Progress,
    *,
    default_source: str,
    defaults: dict[str, Any] | None = None,
    config: Callable[[Run | None], dict[str, Any]] | None = None,
) -> Iterator[tuple[Run, StopGuard]]:
    """The run the options name (``storage.opening.open_run``) in its store, with signals
    guarded; a database this command made goes again if it fails before any run is in it."""
    with (
        made_db(opts.db),
        CheckpointStore(opts.db, create=not opts.resume) as store,
        StopGuard() as guard,
    ):
        run = open_run(
            store, opts.input.source, default_source=default_source, model=opts.model,
            resume=opts.resume, name=opts.run, checkpoint=opts.checkpoint, skip=opts.skip,
            window=opts.window, defaults=defaults, config=config, keep=opts.keep,
            checkpoint_every=opts.checkpoint_every, checkpoint_seconds=opts.checkpoint_seconds,
            on_error=opts.on_error.value, rejects=opts.rejects, log=progress.log,
        )  # fmt: skip
        yield run, guard


def summary_line(run: Run, opts: LearnOptions, progress: Progress, stopped: str | None) -> None:
    """The summary of a file, stdin or socket run: accuracy on stdout, the counts on stderr."""
    out, err = summary_lines(run.loop.report(), run.source, run.name, opts.db, stopped,
                             json_out=opts.json_out)  # fmt: skip
    print(out, flush=opts.json_out)
    progress.log(err)
