"""Score and use a saved run without learning: its loop from the store, the evaluation report.

``eval`` and ``predict`` on the command line are these calls plus printing; a library user gets
the same figures: ``evaluation(info.name, ck.id, "test.csv", saved, open_source("test.csv"))``
after ``info, saved, ck = load_saved("runs.db")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from spela_stream.errors import ConfigError
from spela_stream.prequential import Prequential
from spela_stream.sources import Source, open_source
from spela_stream.sources.frames import is_frame_spec
from spela_stream.stopping import StopGuard

from .records import CheckpointInfo, RunInfo
from .session import load_loop
from .store import CheckpointStore, pick_run

if TYPE_CHECKING:
    from spela_stream.config import EvalOptions, Input, PredictOptions
    from spela_stream.model import SpelaMLP


def load_saved(
    db: Path | str, run: str | None = None, checkpoint: int | None = None
) -> tuple[RunInfo, Prequential, CheckpointInfo]:
    """The run ``run`` (default: the latest) in ``db``, read only, and its loop rebuilt from a
    checkpoint (default: its latest) to score, not to learn."""
    with CheckpointStore(Path(db), create=False, readonly=True) as store:
        info = pick_run(store, run)
        loop, ck = load_loop(store, info, checkpoint, learn=False)
    return info, loop, ck


def evaluation(
    run: str,
    checkpoint: int,
    source: str,
    saved: Prequential,
    src: Source,
    *,
    window: int = 1000,
    limit: int | None = None,
    guard: StopGuard | None = None,
) -> dict[str, Any]:
    """Score ``saved``'s model on ``src`` (named ``source``) without learning: accuracy, kappa,
    the calibration error, each layer, recall and confusion, and the saved run's own per-class
    stream figures beside them. The dict is what ``eval --json`` prints."""
    loop = Prequential(saved.model, window=window, learn=False)
    for _ in loop.run(src, every=1 << 62, limit=limit, guard=guard):
        pass
    m = loop.metrics
    classes, cm = m.reported.confusion()
    recall = m.reported.recall()
    fig = saved.metrics.per_class.figures(recall)
    return {
        "run": run,
        "checkpoint": checkpoint,
        "source": source,
        "samples": loop.samples,
        **m.reported.summary(),
        "ece": m.calibration.get(),  # expected calibration error of the confidence, 15 bins
        "layers": [t.summary() for t in m.layers],
        "recall": [[c, r] for c, r in recall.items()],
        "classes": classes,
        "confusion": cm,
        "stream": {
            **saved.metrics.per_class.summary(),
            "per_class": [[c, f] for c, f in fig.items()],
        },
    }


def open_scored(
    source: str,
    run: RunInfo,
    model: SpelaMLP,
    *,
    fmt: str | None = None,
    label_column: str | None = None,
    header: bool | None = None,
    features: int | None = None,
    labels: str | Path | None = None,
) -> Source:
    """The stream a saved ``run`` scores (eval) or answers (predict): frames through the run's
    own backbone (labelled by the track ``labels``; a frames run takes nothing else), or records
    ``features`` wide, by default as wide as ``model``'s input (so that CSV records of that
    width read as unlabelled)."""
    if not is_frame_spec(source):
        if "frames" in run.config:
            raise ConfigError(
                f"run {run.name!r} learned frames through a backbone; score it on a camera:PATH "
                "or images:DIR source"
            )
        return open_source(source, fmt=fmt, label_column=label_column, header=header,
                           n_features=features or model.n_features)  # fmt: skip
    from spela_stream.features import backbone_spec, make_backbone
    from spela_stream.sources.frames import open_frames
    from spela_stream.sources.labels import LabelTrack

    spec = backbone_spec(run)
    track = LabelTrack.read(labels) if labels is not None else None
    return open_frames(source, make_backbone(spec["backbone"], spec["size"]), labels=track)


def open_input(inp: Input, run: RunInfo, model: SpelaMLP) -> Source:
    """The source ``inp`` names, to score with ``run``'s ``model`` (``open_scored``)."""
    labels = inp.frames.labels if inp.frames is not None else None
    return open_scored(inp.source, run, model, fmt=inp.fmt, label_column=inp.label_column,
                       header=inp.header, features=inp.features, labels=labels)  # fmt: skip


def evaluate(opts: EvalOptions) -> dict[str, Any]:
    """``eval``: the saved model ``opts`` names scored on ``opts.input`` without learning
    (``evaluation``), on ``opts.threads`` threads; a signal stops it (``Interrupted``)."""
    import torch

    torch.set_num_threads(opts.threads)
    info, saved, ck = load_saved(opts.db, opts.run, opts.checkpoint)
    saved.model.threads = opts.threads
    with StopGuard() as guard, open_input(opts.input, info, saved.model) as src:
        return evaluation(info.name, ck.id, opts.input.source, saved, src, window=opts.window,
                          limit=opts.limit, guard=guard)  # fmt: skip


def write_predictions(opts: PredictOptions, out: TextIO) -> None:
    """``predict``: one prediction of the saved model per record of ``opts.input`` on ``out``
    (csv with a header written with the first answer, or JSON lines); labels are not used and
    nothing is learned. From stdin (``-``) each answer is flushed as its question arrives."""
    import torch

    from spela_stream.config import Output
    from spela_stream.display import prediction_csv, prediction_json

    torch.set_num_threads(opts.threads)
    info, loop, _ = load_saved(opts.db, opts.run, opts.checkpoint)
    loop.model.threads = opts.threads
    flush = opts.input.source == "-"  # a pipe's reader wants each answer as its question arrives
    header = opts.output is Output.csv  # written with the first answer, not before an error
    with StopGuard(), open_input(opts.input, info, loop.model) as src:
        for sample in src:
            p = loop.step(sample.x, None, sample.index, sample.where)  # labels are not used
            if header:
                out.write("label,confidence,layer\n")
                header = False
            if opts.output is Output.csv:
                out.write(prediction_csv(p))
            else:
                out.write(prediction_json(p, sample.index, sample.id))
            if flush:
                out.flush()
    out.flush()
