"""Open the run a learner asks for: a new one from model options, or with ``resume`` the run
named, its model options refused; and a database that a failed first run made goes again.

Every ``learn`` path of the command line (file, camera, TCP) opens its run here, then drives it
(``storage.run.Run.drive``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from spela_stream.config import LearnOptions
from spela_stream.display import plural
from spela_stream.errors import ConfigError
from spela_stream.model import SpelaMLP
from spela_stream.sources.frames import is_frame_spec
from spela_stream.sources.resume import carries_new_data
from spela_stream.stopping import StopGuard

from .run import Run
from .store import CheckpointStore
from .store import pick_run as pick

_LOG = logging.getLogger(__name__)


@contextlib.contextmanager
def made_db(path: Path) -> Iterator[None]:
    """Around work that may create the database at ``path``: if the work fails and the file it
    made holds no run, the file goes again (a failed first ``learn`` leaves nothing)."""
    existed = path.exists()
    try:
        yield
    except BaseException:
        if not existed and path.exists():
            with CheckpointStore(path, create=False) as store:
                empty = not store.runs()
            if empty:
                for extra in ("", "-wal", "-shm", "-journal"):
                    Path(f"{path}{extra}").unlink(missing_ok=True)
        raise


def open_run(
    store: CheckpointStore,
    source: str,
    *,
    default_source: str = "builtin:mnist",
    model: Mapping[str, Any],
    resume: bool = False,
    name: str | None = None,
    checkpoint: int | None = None,
    skip: int | None = None,
    window: int = 1000,
    defaults: Mapping[str, Any] | None = None,
    config: Callable[[Run | None], dict[str, Any]] | None = None,
    **policy: Any,
) -> Run:
    """A new run on ``source`` (empty: ``default_source``) of a model built from ``model``
    (over ``defaults``; None values unset), or with ``resume`` the run ``name`` (default: the
    latest) reading ``source`` (empty: its own), which then refuses ``model`` options.
    ``config(None)`` adds to a new run's config; ``config(run)`` checks a resumed run's.
    ``policy`` goes to the ``Run``; its ``log`` gets the resume news."""
    log: Callable[[str], None] = policy.get("log", _LOG.info)
    given = {k: v for k, v in model.items() if v is not None}
    if not resume:
        if checkpoint is not None or skip is not None:
            flag = "--checkpoint" if checkpoint is not None else "--skip"
            raise ConfigError(f"{flag} goes with --resume (a new run starts at record 1)")
        built = SpelaMLP(**{**(defaults or {}), **given})  # checks its options before any run
        extra = config(None) if config is not None else None
        return Run.start(
            store, built, source or default_source, name=name, window=window, config=extra, **policy
        )
    info = pick(store, name)
    if given:
        flag = "--" + next(iter(given)).replace("_", "-")  # input_readout: --input-readout
        raise ConfigError(
            f"{flag} cannot change a resumed run (run {info.name!r} keeps its config)"
        )
    run = Run.resume(store, info.name, checkpoint=checkpoint, source=source, skip=skip,
                     window=window, **policy)  # fmt: skip
    if config is not None:
        config(run)  # the run's own settings are checked against the options
    for line in resume_news(run):
        log(line)
    return run


def resume_news(run: Run) -> list[str]:
    """What a resumed run says: the checkpoint it goes on from and what it reads (none for a run
    that stopped before its first checkpoint)."""
    ck = run.saved
    if ck is None:
        return []
    reading = (
        f"reading {run.source} after its first {run.skip} records"
        if run.skip
        else f"reading new data from {run.source}, nothing skipped"
        if carries_new_data(run.source)
        else f"reading {run.source} from its start"
    )
    news = [
        f"resuming run {run.name!r} from checkpoint {ck.id}: {plural(ck.samples, 'sample')}, "
        f"{ck.where or 'start'} of {ck.source}; {reading}"
    ]
    if run.source != ck.source and run.skip:
        news.append(
            f"note: run {run.name!r} was reading {ck.source}; now {run.source}, from record "
            f"{run.skip + 1} on (the records before it count as learned)"
        )
    return news


@contextlib.contextmanager
def learning(
    opts: LearnOptions,
    log: Callable[[str], None],
    *,
    default_source: str,
    defaults: Mapping[str, Any] | None = None,
    config: Callable[[Run | None], dict[str, Any]] | None = None,
) -> Iterator[tuple[Run, StopGuard]]:
    """The run ``opts`` names (``open_run``) in its store, with signals guarded; a database
    this made goes again if it fails before any run is in it (``made_db``). ``log`` hears the
    resume news; ``defaults`` are a new run's model options under those given (e.g.
    ``features.FRAME_MODEL_DEFAULTS``); a resumed run keeps its saved ones."""
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
            on_error=opts.on_error.value, rejects=opts.rejects, log=log,
        )  # fmt: skip
        yield run, guard


def resumes_frames(db: Path, name: str | None = None) -> bool:
    """Whether the run a resume of ``db`` goes on (``name``, or the latest) learned frames
    through a backbone (``frames`` in its config); False when there is no such run or file."""
    if not db.exists():
        return False
    with CheckpointStore(db, create=False, readonly=True) as store:
        latest = store.latest_run() if name is None else store.run(name)
        return latest is not None and "frames" in latest.config


def wants_frames(opts: LearnOptions) -> bool:
    """True when ``learn`` reads frames through a backbone: a ``camera...`` or ``images:DIR``
    source, a frame option (``FrameOptions``) set, or a resume without a source of a run that
    learned frames (``resumes_frames``)."""
    fo = opts.input.frames
    if is_frame_spec(opts.input.source) or (fo is not None and fo.given()):
        return True
    return opts.resume and not opts.input.source and resumes_frames(opts.db, opts.run)
