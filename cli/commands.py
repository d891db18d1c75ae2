"""What each command does, given parsed options: open, run the library, format.

Errors: a ``SpelaError`` prints ``Error: ...`` and exits 1; a ``ConfigError`` from option values
exits 2; ``Interrupted`` (SIGINT/SIGTERM) exits 128 + the signal after the checkpoint.
"""

from __future__ import annotations

import enum
import io
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ParamSpec, TextIO

import torch
import typer

from spela_stream.errors import CheckpointError, ConfigError, SpelaError
from spela_stream.model import SpelaMLP
from spela_stream.prequential import CheckpointPolicy, Interrupted, Prequential, StopGuard
from spela_stream.sources import BadRecordError, Sample, Source, open_source
from storage import CheckpointStore
from storage.records import RunInfo
from storage.session import Session, load_loop

from .output import Progress, human_bytes, report_json, table

P = ParamSpec("P")


class OnError(enum.StrEnum):
    """What a bad record does to a run."""

    raise_ = "raise"
    skip = "skip"


class Output(enum.StrEnum):
    """Prediction output format."""

    csv = "csv"
    json = "json"


@dataclass(frozen=True)
class Input:
    """Where samples come from and how to read them."""

    source: str
    fmt: str | None = None
    label_column: str | None = None
    header: bool | None = None
    features: int | None = None

    def open(
        self,
        skip: int = 0,
        on_error: Callable[[BadRecordError], None] | None = None,
        model: SpelaMLP | None = None,
    ) -> Source:
        """Open the source, skipping ``skip`` records (a resumed run's position). Given a trained
        ``model``, CSV records as wide as its input are read as unlabelled."""
        label: str | int | None = self.label_column
        if isinstance(label, str) and label.lstrip("-").isdigit():
            label = int(label)
        return open_source(
            self.source,
            fmt=self.fmt,
            label_column=label,
            header=self.header,
            n_features=self.features or (model.n_features if model is not None else None),
            skip=skip,
            on_error=on_error,
        )


@dataclass
class LearnOptions:
    """Everything ``learn`` was asked to do."""

    input: Input
    db: Path
    run: str | None
    resume: bool
    model: dict[str, Any]
    every: int = 1000
    window: int = 1000
    limit: int | None = None
    checkpoint_every: int | None = None
    checkpoint_seconds: float | None = 60.0
    keep: int | None = 3
    on_error: OnError = OnError.raise_
    rejects: Path | None = None
    json_out: bool = False
    quiet: bool = False
    threads: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``Error: message`` on stderr and return the Exit to raise."""
    typer.echo(f"Error: {message}", err=True)
    return typer.Exit(code)


def guarded(command: Callable[P, None], *args: P.args, **kwargs: P.kwargs) -> None:
    """Run a command body, mapping the library's errors to messages and exit codes."""
    try:
        command(*args, **kwargs)
    except ConfigError as exc:
        raise fail(f"Invalid value: {exc}", 2) from None
    except SpelaError as exc:
        raise fail(str(exc)) from None
    except Interrupted as stop:  # nothing to save here (learn saves before it gets this far)
        raise typer.Exit(stop.exit_code) from None
    except BrokenPipeError:  # the reader of our stdout went away (`| head`): a normal end
        try:  # point stdout at /dev/null so the interpreter's final flush cannot fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, io.UnsupportedOperation):
            pass
        raise typer.Exit(0) from None


def _store(db: Path, create: bool) -> CheckpointStore:
    return CheckpointStore(db, create=create)


def _pick_run(store: CheckpointStore, name: str | None) -> RunInfo:
    if name is not None:
        return store.run(name)
    latest = store.latest_run()
    if latest is None:
        raise CheckpointError(f"{store.path} holds no runs yet (learn one with --db {store.path})")
    return latest


# ---------------------------------------------------------------- learn


class Rejects:
    """Count bad records, append their raw text to a file, and move the loop past them."""

    def __init__(self, path: Path | None, progress: Progress) -> None:
        self.loop: Prequential | None = None
        self.path = path
        self.progress = progress
        self._fh: TextIO | None = None

    def __call__(self, err: BadRecordError) -> None:
        assert self.loop is not None, "records are read only once the loop exists"
        self.loop.reject(err.index, err.where)
        if self.loop.rejected <= 10:
            self.progress.log(f"skipped {err}")
        if self.path is not None and err.raw is not None:
            if self._fh is None:
                self._fh = self.path.open("a", encoding="utf-8")
            self._fh.write(err.raw + "\n")
            self._fh.flush()  # a rejected line is data too: on disk before the run goes on

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def _new_session(store: CheckpointStore, opts: LearnOptions, model: SpelaMLP) -> Session:
    source = opts.input.source or "builtin:mnist"
    name = store.create_run(opts.run, model.config(), source)
    return Session(store, name, Prequential(model, window=opts.window), source)


def _resumed_session(store: CheckpointStore, opts: LearnOptions, progress: Progress) -> Session:
    info = _pick_run(store, opts.run)
    given = [k for k, v in opts.model.items() if v is not None]
    if given:
        raise ConfigError(
            f"--{given[0]} cannot change a resumed run (run {info.name!r} keeps its config)"
        )
    loop, ck = load_loop(store, info)
    progress.log(
        f"resuming run {info.name!r} from checkpoint {ck.id}: {ck.samples} samples, "
        f"{ck.where or 'start'} of {ck.source}"
    )
    # A resumed run may be pointed at its (moved) file again with --source.
    return Session(store, info.name, loop, opts.input.source or ck.source)


def learn(opts: LearnOptions) -> None:
    """Learn test-then-train, checkpointing on the policy, at the end, on error and on signals."""
    torch.set_num_threads(opts.threads)  # per-sample learning is memory bound: 1 thread is best
    if opts.rejects is not None and opts.on_error is not OnError.skip:
        raise ConfigError("--rejects needs --on-error skip")
    progress = Progress(json_out=opts.json_out, quiet=opts.quiet)
    rejects = Rejects(opts.rejects, progress)
    on_error = rejects if opts.on_error is OnError.skip else None
    with _store(opts.db, create=True) as store, StopGuard() as guard:
        if opts.resume:
            session = _resumed_session(store, opts, progress)
            src = replace(opts.input, source=session.source).open(session.loop.position, on_error)
        else:  # check the options and open the source before a run is made for them
            model = SpelaMLP(**{k: v for k, v in opts.model.items() if v is not None})
            src = replace(opts.input, source=opts.input.source or "builtin:mnist").open(0, on_error)
            session = _new_session(store, opts, model)
        session.keep = opts.keep
        loop = rejects.loop = session.loop
        policy = CheckpointPolicy(session.save, opts.checkpoint_every, opts.checkpoint_seconds)
        progress.log(f"learning {session.source} into {opts.db} run {session.run!r}")
        try:
            for report in loop.run(
                _ticking(src, loop, progress), every=opts.every, doubling=True,
                limit=opts.limit, checkpoint=policy, guard=guard,
            ):  # fmt: skip
                progress.report(report)
        except Interrupted as stop:
            session.save()
            progress.close()
            _summary(loop, session, progress, opts, stopped=stop.args[0])
            raise typer.Exit(stop.exit_code) from None
        except BrokenPipeError:
            session.save()  # the reader of --json rows left; what was learned is kept
            raise
        except SpelaError:
            session.save()  # everything learned before the bad record is kept
            progress.close()
            progress.log(f"checkpointed {loop.samples} samples of run {session.run!r}")
            raise
        finally:
            rejects.close()
        session.save()
        progress.close()
        _summary(loop, session, progress, opts)


def _ticking(src: Source, loop: Prequential, progress: Progress) -> Iterator[Sample]:
    """Pass samples through, giving the progress display a look every 64 of them."""
    with src:
        for i, sample in enumerate(src):
            if i & 63 == 0:
                progress.tick(loop)
            yield sample


def _summary(
    loop: Prequential, session: Session, progress: Progress, opts: LearnOptions,
    stopped: str | None = None,
) -> None:  # fmt: skip
    r = loop.report()
    if opts.json_out:
        print(report_json(r, kind="summary"), flush=True)
    else:
        print(f"accuracy {r.accuracy:.4f} after {r.samples} samples of {session.source}")
    why = f"stopped by {stopped}" if stopped else "done"
    progress.log(
        f"{why}: {r.samples} samples ({r.learned} learned, {r.rejected} rejected), kappa "
        f"{r.kappa:.4f}, layers {' '.join(f'{a:.4f}' for a in r.layer_accuracy)}, "
        f"{r.drifts} drift(s); checkpoint of run {session.run!r} in {opts.db}"
    )


# ---------------------------------------------------------------- eval and predict


@dataclass(frozen=True)
class EvalOptions:
    """Everything ``eval`` was asked to do."""

    input: Input
    db: Path
    run: str | None
    checkpoint: int | None
    limit: int | None
    window: int
    json_out: bool
    threads: int


def evaluate(opts: EvalOptions) -> None:
    """Score a saved model on a stream without learning."""
    torch.set_num_threads(opts.threads)
    with _store(opts.db, create=False) as store:
        info = _pick_run(store, opts.run)
        saved, ck = load_loop(store, info, opts.checkpoint, learn=False)
    loop = Prequential(saved.model, window=opts.window, learn=False)
    with StopGuard() as guard, opts.input.open(model=saved.model) as src:
        for _ in loop.run(src, every=1 << 62, limit=opts.limit, guard=guard):
            pass
    m = loop.metrics
    classes, cm = m.reported.confusion()
    result = {
        "run": info.name,
        "checkpoint": ck.id,
        "source": opts.input.source,
        "samples": loop.samples,
        **m.reported.summary(),
        "layers": [t.summary() for t in m.layers],
        "recall": [[c, r] for c, r in m.reported.recall().items()],
        "classes": classes,
        "confusion": cm,
    }
    if opts.json_out:
        print(json.dumps(result))
        return
    print(f"run {info.name} checkpoint {ck.id} on {opts.input.source}: {loop.samples} samples")
    print(f"accuracy {result['accuracy']:.4f}  kappa {result['kappa']:.4f}")
    for i, t in enumerate(m.layers):
        print(f"layer {i}: accuracy {t.accuracy:.4f}  kappa {t.kappa:.4f}")
    print("\nrecall per class")
    print(table([[c, f"{r:.4f}"] for c, r in m.reported.recall().items()], ["class", "recall"]))
    print("\nconfusion (rows: truth, columns: prediction)")
    print(table([[c, *row] for c, row in zip(classes, cm, strict=True)], ["", *map(str, classes)]))


@dataclass(frozen=True)
class PredictOptions:
    """Everything ``predict`` was asked to do."""

    input: Input
    db: Path
    run: str | None
    checkpoint: int | None
    output: Output
    threads: int


def predict(opts: PredictOptions) -> None:
    """One prediction per input record on stdout; labels in the input are ignored."""
    torch.set_num_threads(opts.threads)
    with _store(opts.db, create=False) as store:
        loop, _ = load_loop(store, _pick_run(store, opts.run), opts.checkpoint, learn=False)
    flush = opts.input.source == "-"  # a pipe's reader wants each answer as its question arrives
    out = sys.stdout
    if opts.output is Output.csv:
        out.write("label,confidence,layer\n")
    with StopGuard(), opts.input.open(model=loop.model) as src:
        for sample in src:
            p = loop.step(sample.x, None, sample.index, sample.where)  # labels are not used
            if opts.output is Output.csv:
                label = "" if p.label is None else str(p.label)
                if any(ch in label for ch in ',"\n'):
                    label = '"' + label.replace('"', '""') + '"'
                out.write(f"{label},{p.confidence:.6f},{p.layer}\n")
            else:
                row = {"index": sample.index, "label": p.label, "confidence": p.confidence}
                row["layer"] = p.layer
                if sample.id is not None:
                    row["id"] = sample.id
                out.write(json.dumps(row) + "\n")
            if flush:
                out.flush()
    out.flush()


# ---------------------------------------------------------------- runs, checkpoints, plot


def list_runs(db: Path, json_out: bool) -> None:
    """The runs of a database, as a table or JSON lines."""
    with _store(db, create=False) as store:
        found = store.runs()
    if json_out:
        for r in found:
            print(json.dumps(asdict(r)))
        return
    rows = []
    for r in found:
        s = r.summary or {}
        acc = f"{s['accuracy']:.4f}" if "accuracy" in s else None
        roll = f"{s['rolling']:.4f}" if "rolling" in s else None
        hidden = ",".join(str(w) for w in r.config.get("hidden", []))
        rows.append([r.name, r.samples, acc, roll, r.checkpoints, hidden, r.source, r.updated])
    header = ["run", "samples", "accuracy", "rolling", "ckpts", "hidden", "source", "updated"]
    print(table(rows, header))


def list_checkpoints(db: Path, run: str | None, json_out: bool) -> None:
    """The checkpoints of a database (or one run), as a table or JSON lines."""
    with _store(db, create=False) as store:
        if run is not None:
            store.run(run)  # a clear error for a run that does not exist
        found = store.checkpoints(run)
    if json_out:
        for c in found:
            print(json.dumps(asdict(c)))
        return
    rows = [
        [c.id, c.run, c.samples, c.position, c.where, c.created, human_bytes(c.bytes)]
        for c in found
    ]
    print(table(rows, ["id", "run", "samples", "position", "at", "created", "size"]))


def plot(db: Path, run: str | None, output: Path) -> None:
    """Write a run's learning curve as a PNG."""
    from .plot import learning_curve  # matplotlib is slow to import: only when asked

    with _store(db, create=False) as store:
        info = _pick_run(store, run)
        history = store.history(info.name)
    learning_curve(history, info, output)
    typer.echo(str(output))
