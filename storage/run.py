"""A named run's lifecycle: start or resume it, learn a stream through it, checkpoint it.

The one place that binds a ``Prequential`` loop to a ``CheckpointStore``: it checkpoints on its
policy, at the end, on an error, on a signal and on a broken pipe, every save with the stop guard
busy so a signal waits for the transaction instead of tearing it (and its history rows) apart.
It lives in ``storage`` because it must see the store; the core stays free of SQLite.

>>> import tempfile
>>> from pathlib import Path
>>> from spela_stream.model import SpelaMLP
>>> from spela_stream.sources import open_source
>>> from storage import CheckpointStore
>>> db = Path(tempfile.mkdtemp()) / "runs.db"
>>> with CheckpointStore(db) as store:
...     run = Run.start(store, SpelaMLP(hidden=(64,), seed=0), "builtin:mnist", name="demo")
...     first = run.learn(open_source("builtin:mnist"), limit=200)
>>> with CheckpointStore(db) as store:  # later, in another process: go on where it stopped
...     run = Run.resume(store, "demo")
...     with open_source(run.source, skip=run.skip) as stream:
...         last = run.learn(stream, limit=500)
>>> first.samples, run.skip, last.samples, f"{last.accuracy:.4f}"
(200, 200, 500, '0.7295')
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spela_stream.display import plural
from spela_stream.errors import CheckpointError, ConfigError, SpelaError
from spela_stream.model import AUTO, SpelaMLP
from spela_stream.prequential import CheckpointPolicy, Interrupted, Prequential, Report
from spela_stream.rejects import Rejects
from spela_stream.sources import BadRecordError
from spela_stream.sources.resume import FileMarker, file_of, resume_skip
from spela_stream.stopping import StopGuard

from .rebuild import rebuild_loop
from .records import Checkpoint, CheckpointInfo
from .store import CheckpointStore
from .store import pick_run as pick

if TYPE_CHECKING:
    from spela_stream.display import Progress

_LOG = logging.getLogger("spela_stream.run")
MARK_KEY = "source_mark"  # the loop state's key for the file mark (spela_stream.sources.resume)
Reports = Callable[[CheckpointPolicy, StopGuard], Iterable[Report]]


def _stderr(message: str) -> None:
    """A library user's default: notes and warnings go to the ``logging`` module (shown on
    stderr when logging is not configured); the CLI passes its own progress log."""
    _LOG.warning(message)


def _usable(
    store: CheckpointStore, run: str, checkpoint: int | None
) -> tuple[Checkpoint, Prequential, list[str]]:
    """The checkpoint to go on from and its loop, with a note for each newer one passed over.

    With an id, that checkpoint or its error. Without, the newest one that is intact *and*
    rebuilds: a checkpoint whose checksums hold but whose state this code cannot use (saved
    with its checksum recomputed, say) is passed over as a damaged one is, with a warning."""
    ck = store.load(run, checkpoint)
    notes = list(ck.damaged)
    while True:
        try:
            return (
                ck,
                rebuild_loop(ck, f"checkpoint {ck.info.id} of run {run!r} in {store.path}"),
                notes,
            )
        except CheckpointError as exc:
            older = [c.id for c in store.checkpoints(run) if c.id < ck.info.id]
            if checkpoint is not None or not older:
                raise
            notes.append(f"{exc}; going on from an older checkpoint")
            for cid in reversed(older):
                try:
                    ck = store.load(run, cid)
                    break
                except CheckpointError as damage:
                    notes.append(str(damage))
            else:
                raise


class Run:
    """A run of a store: a loop, the source it reads, when to checkpoint, and ``skip`` (records
    of the source a resumed run passes over). Build one with ``start`` or ``resume``.

    ``on_error="skip"`` passes over bad records (a reader's, and samples the model refuses):
    counted, the first ten logged, their raw text appended to ``rejects`` when given. A reader
    takes ``on_bad`` (None unless skipping); a service, which never stops on a bad line,
    ``rejects``."""

    def __init__(
        self,
        store: CheckpointStore,
        loop: Prequential,
        source: str,
        *,
        name: str | None = None,
        config: Mapping[str, Any] | None = None,
        exists: bool = False,
        saved: CheckpointInfo | None = None,
        skip: int = 0,
        keep: int | None = 3,
        checkpoint_every: int | None = None,
        checkpoint_seconds: float | None = 60.0,
        on_error: str = "raise",
        rejects: Path | None = None,
        log: Callable[[str], None] = _stderr,
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise ConfigError(f"`on_error` {on_error!r}: give raise or skip")
        if rejects is not None and on_error != "skip":
            raise ConfigError("`rejects` needs `on_error` skip (with raise, a bad record stops)")
        self.store = store
        self.loop = loop
        self.source = source
        self.config = dict(config if config is not None else loop.model.config())
        self.skip = skip
        self.keep = keep
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds
        self.log = log
        self.rejects = Rejects(loop, rejects, log)  # every bad record goes through it
        self.skipping = on_error == "skip"
        self.saved = saved  # the checkpoint a resumed run started from
        self.checkpoint: int | None = None if saved is None else saved.id
        self._name = name
        self._exists = exists
        self._made = False  # created in the store by this Run (not there before)
        self.discarded = False  # a new run that failed before any record: removed again
        self._guard: StopGuard | None = None
        self._saved_at = self._state() if saved is not None else None
        self._marker: FileMarker | None = None
        if store.wal_damage is not None:  # SQLite's recovery dropped it without a word
            log(f"warning: {store.wal_damage}")

    @property
    def name(self) -> str:
        """The run's name in the store (made when it first learns, if ``start`` gave none)."""
        if self._name is None:
            raise CheckpointError("the run has no name before it is created (call create)")
        return self._name

    @property
    def on_bad(self) -> Callable[[BadRecordError], None] | None:
        """A reader's ``on_error``: the run's ``rejects`` when skipping, else None (raise)."""
        return self.rejects if self.skipping else None

    # ------------------------------------------------------------------ start and resume

    @classmethod
    def start(
        cls,
        store: CheckpointStore,
        model: SpelaMLP,
        source: str,
        *,
        name: str | None = None,
        window: int = 1000,
        config: Mapping[str, Any] | None = None,
        **policy: Any,
    ) -> Run:
        """A new run of ``model`` on ``source``; it is written to the store when it first learns,
        so a source that fails to open leaves no run behind. ``config`` adds to the model's."""
        loop = Prequential(model, window=window)
        return cls(store, loop, source, name=name, config={**model.config(), **(config or {})},
                   **policy)  # fmt: skip

    @classmethod
    def resume(
        cls,
        store: CheckpointStore,
        name: str | None = None,
        *,
        checkpoint: int | None = None,
        source: str | None = None,
        skip: int | None = None,
        window: int = 1000,
        **policy: Any,
    ) -> Run:
        """Go on with a run from its latest checkpoint (or ``checkpoint``), reading ``source``
        (default: its own). A file goes on after its last record only when it is the same file;
        stdin, sockets and cameras carry new data; ``skip`` overrides both."""
        log: Callable[[str], None] = policy.get("log", _stderr)
        info = pick(store, name)
        if info.checkpoints == 0 and checkpoint is None:  # killed before its first checkpoint
            model = SpelaMLP(**{k: v for k, v in info.config.items() if k != "frames"})
            log(
                f"note: run {info.name!r} stopped before its first checkpoint; starting it "
                "afresh with its config"
            )
            loop = Prequential(model, window=window)
            return cls(store, loop, source or info.source, name=info.name, config=info.config,
                       exists=True, skip=skip or 0, **policy)  # fmt: skip
        ck, loop, passed = _usable(store, info.name, checkpoint)
        for why in passed:
            log(f"warning: {why}")
        assert ck.metrics is not None  # rebuild_loop refuses a checkpoint without loop state
        spec = source or ck.info.source
        if skip is None:
            mark = ck.metrics.get(MARK_KEY)
            skip, note = resume_skip(spec, ck.info.source, loop.position,
                                     mark if isinstance(mark, dict) else None)  # fmt: skip
            if note is not None:
                log(f"note: {note}")
        return cls(store, loop, spec, name=info.name, config=info.config, exists=True,
                   saved=ck.info, skip=skip, **policy)  # fmt: skip

    def create(self) -> str:
        """Write the run to the store (once); returns its name."""
        if not self._exists:
            self._name = self.store.create_run(self._name, self.config, self.source)
            self._exists = self._made = True
        return self.name

    # ------------------------------------------------------------------ learning

    def learn(
        self,
        stream: Iterable[Any],
        *,
        every: int = 1000,
        doubling: bool = False,
        limit: int | None = None,
        guard: StopGuard | None = None,
        on_report: Callable[[Report], None] | None = None,
    ) -> Report:
        """Learn ``stream`` test-then-train to its end (or ``limit`` samples in all); returns
        the final report. Checkpointed on the policy, at the end, on errors and signals."""
        reports = self.reports(stream, every=every, doubling=doubling, limit=limit)
        return self.drive(reports, guard=guard, on_report=on_report)

    def reports(
        self, stream: Iterable[Any], *, every: int = 1000, doubling: bool = False,
        limit: int | None = None,
    ) -> Reports:  # fmt: skip
        """The loop over ``stream`` for ``drive``: a report every ``every`` samples (and at
        each doubling); when skipping, a sample the model refuses is a reject, not the end."""
        refused = self.rejects.refused if self.skipping else None

        def reports(policy: CheckpointPolicy, g: StopGuard) -> Iterable[Report]:
            return self.loop.run(stream, every=every, doubling=doubling, limit=limit,
                                 checkpoint=policy, guard=g, on_error=refused)  # fmt: skip

        return reports

    def drive(
        self,
        reports: Reports,
        *,
        guard: StopGuard | None = None,
        on_report: Callable[[Report], None] | None = None,
    ) -> Report:
        """Consume ``reports(policy, guard)`` (a loop or a service stepping ``self.loop``) with
        the run's lifecycle around it: what is learned before any way out is checkpointed."""
        with contextlib.ExitStack() as stack:
            g = guard if guard is not None else stack.enter_context(StopGuard())
            self._guard = g
            self.create()
            stack.enter_context(self._lease())
            stack.enter_context(self.rejects)  # its files close on every way out
            policy = CheckpointPolicy(lambda _: self.save(), self.checkpoint_every,
                                      self.checkpoint_seconds)  # fmt: skip
            try:
                for report in reports(policy, g):
                    if on_report is not None:
                        on_report(report)
            except SpelaError:
                if self._made and self._state() == (0, 0, 0, 0):  # a new run, nothing read
                    self.store.delete_run(self.name)
                    self.discarded = True
                else:
                    self.save_changes()  # everything learned before it is kept
                raise
            except (Interrupted, BrokenPipeError):
                self.save_changes()  # everything learned before it is kept
                raise
            self.save()
            return self.loop.report()

    @contextlib.contextmanager
    def _lease(self) -> Iterator[None]:
        """The one place a writer holds the run: a second live writer gets RunBusyError, a
        stale lease (its process gone) is taken over with a note."""
        with self.store.writer(self.name) as lease:
            if lease.note is not None:
                self.log(f"note: {lease.note}")
            yield

    # ------------------------------------------------------------------ checkpoints

    def _state(self) -> tuple[int, int, int, int]:
        loop = self.loop
        return loop.samples, loop.learned, loop.rejected, loop.position

    def save(self) -> int:
        """Checkpoint now, with signals held off; the history rows leave the loop only once
        the checkpoint holding them is written."""
        with self._guard.busy() if self._guard is not None else nullcontext():
            loop = self.loop
            n = len(loop.history)
            metrics = loop.state()
            mark = self._mark()
            if mark is not None:
                metrics[MARK_KEY] = mark
            built = self._built_config()
            cid = self.store.save(
                self.create(),
                state=loop.model.state_dict(),
                samples=loop.samples,
                source=self.source,
                position=loop.position,
                where=loop.where,
                metrics=metrics,
                history=loop.history[:n],
                keep=self.keep,
                config=built,
            )
            if built is not None:
                self.config = built
            del loop.history[:n]
            self.checkpoint = cid
            self._saved_at = self._state()
        return cid

    def _built_config(self) -> dict[str, Any] | None:
        """The run's config with the widths its model built, once a run started with
        ``hidden="auto"`` has seen its first sample (None: nothing to change)."""
        hidden = self.loop.model.hidden
        if self.config.get("hidden") != AUTO or not hidden:
            return None
        return {**self.config, "hidden": list(hidden)}

    def save_changes(self) -> int | None:
        """Checkpoint if anything changed since the last one (a resume that failed on its first
        record leaves the run, and the source it recorded, as they were)."""
        if self._saved_at is not None and self._saved_at == self._state():
            return None
        return self.save()

    def _mark(self) -> dict[str, Any] | None:
        path = file_of(self.source)
        if path is None:
            return None
        if self._marker is None or self._marker.path != path:
            self._marker = FileMarker(path)
        return self._marker.mark(self.loop.where)


def finish(
    run: Run,
    reports: Reports,
    progress: Progress,
    guard: StopGuard,
    summary: Callable[[str | None], None],
    *,
    reading: str | None = None,
) -> None:
    """Make ``run`` (its source has opened), say on ``progress`` what it learns (``reading``,
    default its source), drive it through ``reports``, then call ``summary(stopped)``. A signal
    re-raises ``Interrupted`` after the checkpoint and ``summary(signal name)`` (the command line
    exits 128 + its number); a failure re-raises after the checkpoint, saying what was kept."""
    run.create()
    progress.log(f"learning {reading or run.source} into {run.store.path} run {run.name!r}")
    try:
        run.drive(reports, guard=guard, on_report=progress.report)
    except Interrupted as stop:
        progress.close()
        summary(stop.args[0])
        raise
    except SpelaError:
        progress.close()
        if run.discarded:
            progress.log(f"run {run.name!r} removed: it failed before its first record")
        else:
            progress.log(f"checkpointed {plural(run.loop.samples, 'sample')} of run {run.name!r}")
        raise
    progress.close()
    summary(None)
