"""What every ``learn`` path shares: its run from the options, bad records, the summary.

The file, camera and TCP paths each build their stream and hand it to ``finish``, which drives
the library's ``Run`` (the lifecycle: checkpoints on the policy, at the end, on errors and
signals) and prints. Nothing here loads torch until a run is made.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

import typer

from spela_stream.errors import ConfigError, InputError, SpelaError
from spela_stream.model import SpelaMLP
from spela_stream.prequential import Prequential, Report
from spela_stream.sources import BadRecordError, Sample, Source
from spela_stream.sources.resume import carries_new_data
from spela_stream.stopping import Interrupted, StopGuard
from storage import CheckpointStore
from storage.run import Reports, Run
from storage.store import pick_run as pick

from .options import LearnOptions, OnError
from .output import Progress, plural, report_json


@contextlib.contextmanager
def made_db(path: Path) -> Iterator[None]:
    """Around a command that may create the database at ``path``: if the command fails and the
    file it made holds no run, the file goes again (a failed first ``learn`` leaves nothing)."""
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


class Rejects:
    """Count bad records, append their raw text to a file, and move the loop past them.

    The file stays replayable (the raw lines, in order); beside it ``FILE.where`` gets one JSON
    object per line of it, in the same order: where the record was, its line number and field
    when known, and why it was refused."""

    def __init__(self, loop: Prequential, path: Path | None, progress: Progress) -> None:
        self.loop = loop
        self.path = path
        self.progress = progress
        self._fh: TextIO | None = None
        self._why: TextIO | None = None

    def __call__(self, err: BadRecordError) -> None:
        self.loop.reject(err.index, err.where)
        if self.loop.rejected <= 10:
            self.progress.log(f"skipped {err}")
        if self.path is not None and err.raw is not None:
            if self._fh is None or self._why is None:
                self._fh = self.path.open("a", encoding="utf-8")
                self._why = where_file(self.path).open("a", encoding="utf-8")
            self._fh.write(err.raw + "\n")
            self._why.write(json.dumps(rejection(err)) + "\n")
            self._fh.flush()  # a rejected line is data too: on disk before the run goes on
            self._why.flush()

    def __enter__(self) -> Rejects:
        return self

    def __exit__(self, *exc: object) -> None:
        for fh in (self._fh, self._why):
            if fh is not None:
                fh.close()
        self._fh = self._why = None


def where_file(rejects: Path) -> Path:
    """The sidecar of a rejects file: ``bad.csv`` -> ``bad.csv.where``."""
    return rejects.with_name(rejects.name + ".where")


def rejection(err: BadRecordError) -> dict[str, Any]:
    """Where and why a record was refused: ``where``, ``line`` and ``field`` (1-based, or None
    when the reader does not say), ``record`` (0-based index in the source), ``reason``."""
    line = re.search(r"\bline (\d+)$", err.where)
    field = re.match(r"field (\d+)\b", err.problem)
    return {
        "where": err.where,
        "line": int(line[1]) if line else None,
        "field": int(field[1]) if field else None,
        "record": err.index,
        "reason": err.problem,
    }


def rejects(opts: LearnOptions, run: Run, progress: Progress) -> Rejects:
    """The bad-record handler for ``--on-error skip`` (``--rejects`` needs it)."""
    if opts.rejects is not None and opts.on_error is not OnError.skip:
        raise ConfigError("--rejects needs --on-error skip")
    return Rejects(run.loop, opts.rejects, progress)


def open_run(
    store: CheckpointStore,
    opts: LearnOptions,
    progress: Progress,
    *,
    default_source: str,
    defaults: dict[str, Any] | None = None,
    config: Callable[[Run | None], dict[str, Any]] | None = None,
) -> Run:
    """A new run of a model built from the options (over ``defaults``), or with ``--resume``
    the run they name, its model options refused."""
    policy: dict[str, Any] = {
        "keep": opts.keep,
        "checkpoint_every": opts.checkpoint_every,
        "checkpoint_seconds": opts.checkpoint_seconds,
        "log": progress.log,
    }
    given = {k: v for k, v in opts.model.items() if v is not None}
    if not opts.resume:
        if opts.checkpoint is not None or opts.skip is not None:
            flag = "--checkpoint" if opts.checkpoint is not None else "--skip"
            raise ConfigError(f"{flag} goes with --resume (a new run starts at record 1)")
        model = SpelaMLP(**{**(defaults or {}), **given})  # checks its options before any run
        extra = config(None) if config is not None else None
        return Run.start(store, model, opts.input.source or default_source, name=opts.run,
                         window=opts.window, config=extra, **policy)  # fmt: skip
    info = pick(store, opts.run)
    if given:
        raise ConfigError(
            f"--{next(iter(given))} cannot change a resumed run (run {info.name!r} keeps its "
            "config)"
        )
    run = Run.resume(store, info.name, checkpoint=opts.checkpoint, source=opts.input.source,
                     skip=opts.skip, window=opts.window, **policy)  # fmt: skip
    if config is not None:
        config(run)  # the run's own settings are checked against the options
    ck = run.saved
    if ck is not None:
        reading = (
            f"reading {run.source} after its first {run.skip} records"
            if run.skip
            else f"reading new data from {run.source}, nothing skipped"
            if carries_new_data(run.source)
            else f"reading {run.source} from its start"
        )
        progress.log(
            f"resuming run {run.name!r} from checkpoint {ck.id}: {plural(ck.samples, 'sample')}, "
            f"{ck.where or 'start'} of {ck.source}; {reading}"
        )
        if run.source != ck.source and run.skip:
            progress.log(
                f"note: run {run.name!r} was reading {ck.source}; now {run.source}, from record "
                f"{run.skip + 1} on (the records before it count as learned)"
            )
    return run


def ticking(src: Source, loop: Prequential, progress: Progress) -> Iterator[Sample]:
    """Pass samples through, giving the progress display a look every 64 of them."""
    with src:
        for i, sample in enumerate(src):
            if i & 63 == 0:
                progress.tick(loop)
            yield sample


def stream_reports(
    stream: Iterable[Any], opts: LearnOptions, run: Run, bad: Rejects | None = None
) -> Reports:
    """The loop over ``stream`` with the command's report cadence and ``--limit``. With
    ``--on-error skip``, ``bad`` also takes the records the model refuses (a label of another
    kind, a width that does not fit): counted and logged as a parser's rejects are."""
    on_error = _model_rejects(bad) if bad is not None and opts.on_error is OnError.skip else None
    return lambda policy, guard: run.loop.run(
        stream, every=opts.every, doubling=True, limit=opts.limit, checkpoint=policy, guard=guard,
        on_error=on_error,
    )  # fmt: skip


def _model_rejects(bad: Rejects) -> Callable[[Any, InputError], None]:
    def refuse(item: Any, exc: InputError) -> None:
        if not isinstance(item, Sample):  # a delayed label or a bare pair: no record to skip
            raise exc
        problem = str(exc).removeprefix(f"{item.where}: ")
        bad(BadRecordError(item.where, problem, index=item.index, raw=None))

    return refuse


def finish(
    run: Run,
    reports: Reports,
    opts: LearnOptions,
    progress: Progress,
    guard: StopGuard,
    summary: Callable[[str | None], None],
) -> None:
    """Drive the run, then print ``summary(stopped)``; a signal exits 128 + its number after
    the checkpoint and the summary, a failure after the checkpoint."""
    try:
        run.drive(reports, guard=guard, on_report=progress.report)
    except Interrupted as stop:
        progress.close()
        summary(stop.args[0])
        raise typer.Exit(stop.exit_code) from None
    except SpelaError:
        progress.close()
        if run.discarded:
            progress.log(f"run {run.name!r} removed: it failed before its first record")
        else:
            progress.log(f"checkpointed {plural(run.loop.samples, 'sample')} of run {run.name!r}")
        raise
    progress.close()
    summary(None)


def summary_line(run: Run, opts: LearnOptions, progress: Progress, stopped: str | None) -> None:
    """The summary of a file, stdin or socket run: accuracy on stdout, the counts on stderr."""
    r: Report = run.loop.report()
    if opts.json_out:
        print(report_json(r, kind="summary"), flush=True)
    else:
        print(f"accuracy {r.accuracy:.4f} after {plural(r.samples, 'sample')} of {run.source}")
    why = f"stopped by {stopped}" if stopped else "done"
    progress.log(
        f"{why}: {plural(r.samples, 'sample')} ({r.learned} learned, {r.rejected} rejected), kappa "
        f"{r.kappa:.4f}, layers {' '.join(f'{a:.4f}' for a in r.layer_accuracy)}, "
        f"{plural(r.drifts, 'drift')}; checkpoint of run {run.name!r} in {opts.db}"
    )
