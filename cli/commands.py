"""What learn, eval and predict do, given parsed options: open, run the library, format.

This module loads torch; ``cli.app`` imports it only when one of these commands runs.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from functools import partial

import torch

from spela_stream.config import EvalOptions, LearnOptions, PredictOptions
from spela_stream.display import evaluation_text, ticking
from spela_stream.sources.tcp import SCHEME as TCP
from storage.evaluation import evaluate as evaluate_saved
from storage.evaluation import write_predictions
from storage.frames_run import learn_frames
from storage.opening import learning, wants_frames
from storage.run import finish
from storage.serving import serve_learning, serve_predictions

from .learning import summary_line
from .options import stderr
from .output import Progress

SERVED = (TCP, "mqtt://")  # sources served line by line: a socket, an MQTT subscription


# ---------------------------------------------------------------- learn


def learn(opts: LearnOptions) -> None:
    """Learn test-then-train into a run: build the stream, hand it to the run, print."""
    progress = Progress(json_out=opts.json_out, quiet=opts.quiet, out=sys.stdout)
    if wants_frames(opts):  # camera:..., images:DIR: frames through a frozen backbone
        return learn_frames(opts, progress, sys.stdout)
    torch.set_num_threads(opts.threads)  # per-sample learning is memory bound: 1 thread is best
    with learning(opts, progress.log, default_source="builtin:mnist") as (run, guard):
        run.loop.model.threads = opts.threads  # the model's per-sample calls use --threads too
        if run.source.startswith(SERVED):  # a service: the same run, checkpoints and exits
            summary = partial(summary_line, run, opts, progress)
            return serve_learning(opts, run, guard, progress, summary, stderr)
        src = replace(opts.input, source=run.source).open(run.skip, run.on_bad)
        stream = run.reports(ticking(src, run.loop, progress), every=opts.every, doubling=True,
                             limit=opts.limit)  # fmt: skip
        finish(run, stream, progress, guard, lambda why: summary_line(run, opts, progress, why))


# ---------------------------------------------------------------- eval and predict


def evaluate(opts: EvalOptions) -> None:
    """Score a saved model on a stream without learning (``storage.evaluation.evaluate``)."""
    result = evaluate_saved(opts)
    print(json.dumps(result) if opts.json_out else evaluation_text(result))


def predict(opts: PredictOptions) -> None:
    """One prediction per input record on stdout; labels in the input are ignored."""
    if opts.input.source.startswith(SERVED):  # a service answering each line
        return serve_predictions(opts, stderr)
    write_predictions(opts, sys.stdout)
