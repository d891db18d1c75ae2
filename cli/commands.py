"""What learn, eval and predict do, given parsed options: open, run the library, format.

This module loads torch; ``cli.app`` imports it only when one of these commands runs.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import torch

from spela_stream.model import SpelaMLP
from spela_stream.prequential import Prequential, StopGuard
from spela_stream.sources import Source
from spela_stream.sources.tcp import SCHEME as TCP
from storage import CheckpointStore
from storage.records import RunInfo
from storage.session import load_loop
from storage.store import pick_run

from . import camera, serve
from .learning import finish, made_db, open_run, rejects, stream_reports, summary_line, ticking
from .options import EvalOptions, Input, LearnOptions, OnError, Output, PredictOptions
from .output import Progress, plural, table

SERVED = (TCP, "mqtt://")  # sources served line by line: a socket, an MQTT subscription

# ---------------------------------------------------------------- learn


def learn(opts: LearnOptions) -> None:
    """Learn test-then-train into a run: build the stream, hand it to the run, print."""
    if camera.wants_frames(opts):  # camera:..., images:DIR: frames through a frozen backbone
        return camera.learn(opts)
    torch.set_num_threads(opts.threads)  # per-sample learning is memory bound: 1 thread is best
    progress = Progress(json_out=opts.json_out, quiet=opts.quiet)
    with (
        made_db(opts.db),
        CheckpointStore(opts.db, create=not opts.resume) as store,
        StopGuard() as guard,
    ):
        run = open_run(store, opts, progress, default_source="builtin:mnist")
        run.loop.model.threads = opts.threads  # the model's per-sample calls use --threads too
        if run.source.startswith(SERVED):  # a service: the same run, checkpoints and exits
            return serve.learn(opts, run, guard, progress)
        with rejects(opts, run, progress) as bad:
            on_error = bad if opts.on_error is OnError.skip else None
            src = replace(opts.input, source=run.source).open(run.skip, on_error)
            run.create()  # the model checked its options and the source opened: make the run
            progress.log(f"learning {run.source} into {opts.db} run {run.name!r}")
            stream = stream_reports(ticking(src, run.loop, progress), opts, run, bad)
            finish(run, stream, opts, progress, guard,
                   lambda stopped: summary_line(run, opts, progress, stopped))  # fmt: skip


# ---------------------------------------------------------------- eval and predict


def _opened(inp: Input, run: RunInfo, model: SpelaMLP) -> Source:
    """The source to score: frames through the run's own backbone, or ``inp.open``."""
    return camera.open_input(inp, run, model)


def evaluate(opts: EvalOptions) -> None:
    """Score a saved model on a stream without learning."""
    torch.set_num_threads(opts.threads)
    with CheckpointStore(opts.db, create=False, readonly=True) as store:
        info = pick_run(store, opts.run)
        saved, ck = load_loop(store, info, opts.checkpoint, learn=False)
    saved.model.threads = opts.threads
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
        "ece": m.calibration.get(),  # expected calibration error of the confidence, 15 bins
        "layers": [t.summary() for t in m.layers],
        "recall": [[c, r] for c, r in recall.items()],
        "classes": classes,
        "confusion": cm,
        "stream": {**saved.metrics.per_class.summary(), "per_class": per_class},
    }
    if opts.json_out:
        print(json.dumps(result))
        return
    on = f"run {info.name} checkpoint {ck.id} on {opts.input.source}"
    print(f"{on}: {plural(loop.samples, 'sample')}")
    print(
        f"accuracy {result['accuracy']:.4f}  kappa {result['kappa']:.4f}  ece {result['ece']:.4f}"
    )
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
    rows = [[c, *row] for c, row in zip(classes, cm, strict=True)]
    print(table(rows, ["truth", *map(str, classes)]))  # a named column: no dashes under nothing


def predict(opts: PredictOptions) -> None:
    """One prediction per input record on stdout; labels in the input are ignored."""
    if opts.input.source.startswith(SERVED):  # a service answering each line
        return serve.predict(opts)
    torch.set_num_threads(opts.threads)
    with CheckpointStore(opts.db, create=False, readonly=True) as store:
        info = pick_run(store, opts.run)
        loop, _ = load_loop(store, info, opts.checkpoint, learn=False)
    loop.model.threads = opts.threads
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
