"""What learn, eval and predict do, given parsed options: open, run the library, format.

This module loads torch; ``cli.app`` imports it only when one of these commands runs.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TextIO

import torch
import typer

from spela_stream.errors import ConfigError, SpelaError
from spela_stream.model import SpelaMLP
from spela_stream.prequential import CheckpointPolicy, Interrupted, Prequential, StopGuard
from spela_stream.sources import BadRecordError, Sample, Source
from spela_stream.sources.tcp import SCHEME as TCP
from storage import CheckpointStore
from storage.records import CheckpointInfo, RunInfo
from storage.session import Session, load_loop

from . import serve
from .options import EvalOptions, Input, LearnOptions, OnError, Output, PredictOptions, pick_run
from .output import Progress, report_json, table

# ---------------------------------------------------------------- learn


class Rejects:
    """Count bad records, append their raw text to a file, and move the loop past them."""

    def __init__(self, loop: Prequential, path: Path | None, progress: Progress) -> None:
        self.loop = loop
        self.path = path
        self.progress = progress
        self._fh: TextIO | None = None

    def __call__(self, err: BadRecordError) -> None:
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


def resumed_loop(
    store: CheckpointStore, opts: LearnOptions
) -> tuple[RunInfo, Prequential, CheckpointInfo]:
    """The run ``--resume`` goes on with, and its loop rebuilt from the latest checkpoint; model
    options cannot change a resumed run."""
    info = pick_run(store, opts.run)
    given = [k for k, v in opts.model.items() if v is not None]
    if given:
        raise ConfigError(
            f"--{given[0]} cannot change a resumed run (run {info.name!r} keeps its config)"
        )
    loop, ck = load_loop(store, info)
    return info, loop, ck


def _resumed_session(store: CheckpointStore, opts: LearnOptions, progress: Progress) -> Session:
    info, loop, ck = resumed_loop(store, opts)
    progress.log(
        f"resuming run {info.name!r} from checkpoint {ck.id}: {ck.samples} samples, "
        f"{ck.where or 'start'} of {ck.source}"
    )
    # A resumed run may be pointed at its (moved) file again with --source.
    source = opts.input.source or ck.source
    if source != ck.source:
        progress.log(
            f"note: run {info.name!r} was reading {ck.source}; now {source}, from record "
            f"{ck.position + 1} on (the records before it count as learned)"
        )
    return Session(store, info.name, loop, source)


def learn(opts: LearnOptions) -> None:
    """Learn test-then-train, checkpointing on the policy, at the end, on error and on signals."""
    from . import camera  # camera:..., images:DIR: frames through a frozen backbone

    if camera.wants_frames(opts):
        return camera.learn(opts)
    torch.set_num_threads(opts.threads)  # per-sample learning is memory bound: 1 thread is best
    if opts.rejects is not None and opts.on_error is not OnError.skip:
        raise ConfigError("--rejects needs --on-error skip")
    progress = Progress(json_out=opts.json_out, quiet=opts.quiet)
    with CheckpointStore(opts.db, create=not opts.resume) as store, StopGuard() as guard:
        resumed = _resumed_session(store, opts, progress) if opts.resume else None
        if resumed is not None:
            loop, spec = resumed.loop, resumed.source
        else:  # the model checks its options, and the source opens, before a run is made
            model = SpelaMLP(**{k: v for k, v in opts.model.items() if v is not None})
            loop = Prequential(model, window=opts.window)
            spec = opts.input.source or "builtin:mnist"
        if spec.startswith(TCP):  # a socket service: the same run, checkpoints and exit codes
            return serve.learn(opts, store, guard, loop, resumed, spec, progress)
        rejects = Rejects(loop, opts.rejects, progress)
        on_error = rejects if opts.on_error is OnError.skip else None
        src = replace(opts.input, source=spec).open(loop.position, on_error)
        session = resumed or Session(
            store, store.create_run(opts.run, loop.model.config(), spec), loop, spec
        )
        session.keep = opts.keep
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


def _opened(inp: Input, run: RunInfo, model: SpelaMLP) -> Source:
    """The source to score: frames through the run's own backbone, or ``inp.open``."""
    from .camera import open_input

    return open_input(inp, run, model)


def evaluate(opts: EvalOptions) -> None:
    """Score a saved model on a stream without learning."""
    torch.set_num_threads(opts.threads)
    with CheckpointStore(opts.db, create=False) as store:
        info = pick_run(store, opts.run)
        saved, ck = load_loop(store, info, opts.checkpoint, learn=False)
    loop = Prequential(saved.model, window=opts.window, learn=False)
    with StopGuard() as guard, _opened(opts.input, info, saved.model) as src:
        for _ in loop.run(src, every=1 << 62, limit=opts.limit, guard=guard):
            pass
    m = loop.metrics
    classes, cm = m.reported.confusion()
    recall = m.reported.recall()
    fig = saved.metrics.per_class.figures(recall)
    per_class = [[c, f] for c, f in fig.items()]
    result = {
        "run": info.name,
        "checkpoint": ck.id,
        "source": opts.input.source,
        "samples": loop.samples,
        **m.reported.summary(),
        "layers": [t.summary() for t in m.layers],
        "recall": [[c, r] for c, r in recall.items()],
        "classes": classes,
        "confusion": cm,
        "stream": {**saved.metrics.per_class.summary(), "per_class": per_class},
    }
    if opts.json_out:
        print(json.dumps(result))
        return
    print(f"run {info.name} checkpoint {ck.id} on {opts.input.source}: {loop.samples} samples")
    print(f"accuracy {result['accuracy']:.4f}  kappa {result['kappa']:.4f}")
    for i, t in enumerate(m.layers):
        print(f"layer {i}: accuracy {t.accuracy:.4f}  kappa {t.kappa:.4f}")
    if fig:  # the saved run has per-class figures (checkpoints before them do not)
        print(
            "\nrecall per class; the run's stream: rolling, best, forgetting; drop: best - recall"
        )
        header = ["class", "recall", "rolling", "best", "forgetting", "drop"]
        keys = ("rolling", "best", "forgetting", "drop")
        cells = [[fig.get(c, {}).get(k) for k in keys] for c in recall]
        rows = [[c, f"{r:.4f}", *(None if v is None else f"{v:.4f}" for v in vs)]
                for (c, r), vs in zip(recall.items(), cells, strict=True)]  # fmt: skip
        print(table(rows, header))
    else:
        print("\nrecall per class")
        print(table([[c, f"{r:.4f}"] for c, r in recall.items()], ["class", "recall"]))
    print("\nconfusion (rows: truth, columns: prediction)")
    print(table([[c, *row] for c, row in zip(classes, cm, strict=True)], ["", *map(str, classes)]))


def predict(opts: PredictOptions) -> None:
    """One prediction per input record on stdout; labels in the input are ignored."""
    if opts.input.source.startswith(TCP):  # a socket service answering each line
        return serve.predict(opts)
    torch.set_num_threads(opts.threads)
    with CheckpointStore(opts.db, create=False) as store:
        info = pick_run(store, opts.run)
        loop, _ = load_loop(store, info, opts.checkpoint, learn=False)
    flush = opts.input.source == "-"  # a pipe's reader wants each answer as its question arrives
    out = sys.stdout
    header = opts.output is Output.csv  # written with the first answer, not before an error
    with StopGuard(), _opened(opts.input, info, loop.model) as src:
        for sample in src:
            p = loop.step(sample.x, None, sample.index, sample.where)  # labels are not used
            if header:
                out.write("label,confidence,layer\n")
                header = False
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
