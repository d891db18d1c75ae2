"""Formatting for the terminal: the progress table, the live line, JSON rows and tables.

Progress goes to stderr; only the command's product goes to stdout. A library user who drives a
``storage.run.Run`` gets the same rows the command line prints.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Protocol, TextIO

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from spela_stream.model import Prediction
    from spela_stream.prequential import Prequential, Report
    from spela_stream.sources import Sample, Source


class NamedRun(Protocol):
    """What the library reads of a saved run (``storage.records.RunInfo`` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def config(self) -> dict[str, Any]: ...


HEADER = (
    "  samples  cum.acc roll.acc   kappa    label     pred  samples/s    model  forget"
    "  roll.acc per layer"
)


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 sample``, ``2 samples``; ``many`` for an irregular plural.

    >>> plural(1, "line"), plural(0, "error"), plural(2, "match", "matches")
    ('1 line', '0 errors', '2 matches')
    """
    return f"{n} {word if n == 1 else (many or word + 's')}"


def human_bytes(n: float) -> str:
    """1536 -> '1.5K', 7.5e6 -> '7.2M' (powers of 1024, as ``ls -h``)."""
    for unit in ("B", "K", "M", "G"):
        if abs(n) < 1024 or unit == "G":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}G"  # pragma: no cover


def _cell(v: object, width: int) -> str:
    text = "-" if v is None else str(v)
    return f"{text[:width]:>{width}}"


def row(r: Report) -> str:
    """One progress row: samples, cumulative and rolling accuracy, kappa, last label/prediction,
    rate, model memory, average per-class forgetting ("-" before any class's window is full),
    each layer's rolling accuracy; a drift since the last row is marked."""
    layers = " ".join(f"{a:.3f}" for a in r.layer_rolling)
    forget = "-" if r.forgetting is None else f"{r.forgetting:.3f}"
    mark = "  drift" if r.drift else ""
    return (
        f"{r.samples:>9d} {r.accuracy:>8.4f} {r.rolling_accuracy:>8.4f} {r.kappa:>7.4f} "
        f"{_cell(r.last_label, 8)} {_cell(r.last_prediction, 8)} {r.samples_per_s:>10.0f} "
        f"{human_bytes(r.model_bytes):>8} {forget:>7}  {layers}{mark}"
    )


def report_json(r: Report, kind: str = "report") -> str:
    """A report as one JSON object; per-class figures are ``[label, value]`` pairs, since a label
    may be an int, a str or a bool and JSON keys are text only."""
    return json.dumps({"kind": kind, **asdict(r)})


class Progress:
    """The progress table on stderr (or JSON rows on ``out``, which the caller names: the CLI
    passes its stdout), plus a live line on a terminal."""

    def __init__(
        self,
        *,
        json_out: bool = False,
        quiet: bool = False,
        err: TextIO | None = None,
        out: TextIO | None = None,
        live: bool | None = None,
        rewrite: Callable[[str], str] | None = None,
    ) -> None:
        self.err = err or sys.stderr
        if json_out and out is None:
            raise ValueError("json_out needs the stream the rows go to (out=...)")
        self.out = out
        self.json_out = json_out
        self.quiet = quiet
        self.live = (not quiet and self.err.isatty()) if live is None else live
        self._header_done = False
        self._last_draw = 0.0
        self._drifts = 0
        self._live_shown = False
        self._rewrite = rewrite or (lambda message: message)

    def _clear_live(self) -> None:
        if self._live_shown:
            self.err.write("\r\x1b[K")
            self._live_shown = False

    def log(self, message: str) -> None:
        """A line of news on stderr (drift, checkpoint, resume)."""
        if not self.quiet:
            self._clear_live()
            print(self._rewrite(message), file=self.err, flush=True)

    def report(self, r: Report) -> None:
        """A table row on stderr, or a JSON row on stdout with ``--json``."""
        if self.json_out:
            assert self.out is not None
            print(report_json(r), file=self.out, flush=True)
            return
        if self.quiet:
            return
        self._clear_live()
        if not self._header_done:
            print(HEADER, file=self.err)
            self._header_done = True
        print(row(r), file=self.err, flush=True)

    def tick(self, loop: Prequential) -> None:
        """Called every few samples: news of drift, and the live line (at most 5 times a second)."""
        drifts = loop.metrics.drifts
        if len(drifts) > self._drifts:
            for at in drifts[self._drifts :]:
                self.log(f"drift detected at sample {at} (ADWIN on the reported error)")
            self._drifts = len(drifts)
        if not self.live or loop.samples == 0:
            return
        now = time.monotonic()
        if now - self._last_draw < 0.2:
            return
        self._last_draw = now
        r = loop.report()
        self.err.write(
            f"\r\x1b[K{r.samples} samples  acc {r.accuracy:.4f}  rolling {r.rolling_accuracy:.4f}"
            f"  {r.samples_per_s:.0f}/s  at {r.where}"
        )
        self.err.flush()
        self._live_shown = True

    def close(self) -> None:
        """Leave the terminal on a clean line."""
        self._clear_live()


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """A plain left-aligned text table (numbers right-aligned), header underlined."""
    cells = [[str(h) for h in header]] + [["-" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    numeric = [
        all(isinstance(r[i], int | float) for r in rows) and bool(rows) for i in range(len(header))
    ]

    def fmt(r: list[str]) -> str:
        parts = [
            c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    lines = [fmt(cells[0]), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in cells[1:]]
    return "\n".join(lines)


def shape_text(hidden: Any) -> str:
    """A config's ``hidden`` for people: ``1024,1024``, or ``auto`` before a sample fixed it."""
    return hidden if isinstance(hidden, str) else ",".join(str(w) for w in hidden)


def evaluation_text(result: dict[str, Any]) -> str:
    """An evaluation (``storage.evaluation.evaluation``) for people: the summary, each layer,
    recall per class (with the run's stream figures when it has them) and the confusion."""
    on = f"run {result['run']} checkpoint {result['checkpoint']} on {result['source']}"
    lines = [
        f"{on}: {plural(result['samples'], 'sample')}",
        f"accuracy {result['accuracy']:.4f}  kappa {result['kappa']:.4f}  ece {result['ece']:.4f}",
    ]
    lines += [f"layer {i}: accuracy {t['accuracy']:.4f}  kappa {t['kappa']:.4f}"
              for i, t in enumerate(result["layers"])]  # fmt: skip
    recall = dict(result["recall"])
    fig = dict(result["stream"]["per_class"])
    if fig:  # the saved run has per-class figures (checkpoints before them do not)
        lines.append(
            "\nrecall per class; the run's stream: rolling, best, forgetting; drop: best - recall"
        )
        header = ["class", "recall", "rolling", "best", "forgetting", "drop"]
        keys = ("rolling", "best", "forgetting", "drop")
        cells = [[fig.get(c, {}).get(k) for k in keys] for c in recall]
        rows = [[c, f"{r:.4f}", *(None if v is None else f"{v:.4f}" for v in vs)]
                for (c, r), vs in zip(recall.items(), cells, strict=True)]  # fmt: skip
        lines.append(table(rows, header))
    else:
        lines.append("\nrecall per class")
        lines.append(table([[c, f"{r:.4f}"] for c, r in recall.items()], ["class", "recall"]))
    lines.append("\nconfusion (rows: truth, columns: prediction)")
    rows = [[c, *row] for c, row in zip(result["classes"], result["confusion"], strict=True)]
    lines.append(table(rows, ["truth", *map(str, result["classes"])]))  # a named column
    return "\n".join(lines)


def prediction_csv(p: Prediction) -> str:
    """One ``label,confidence,layer`` line (with its newline), the label quoted as CSV needs."""
    label = "" if p.label is None else str(p.label)
    if any(ch in label for ch in ',"\n'):
        label = '"' + label.replace('"', '""') + '"'
    return f"{label},{p.confidence:.6f},{p.layer}\n"


def prediction_json(p: Prediction, index: int, id: Any = None) -> str:
    """One JSON line (with its newline): the record's index, label, confidence, layer, its id."""
    row = {"index": index, "label": p.label, "confidence": p.confidence, "layer": p.layer}
    if id is not None:
        row["id"] = id
    return json.dumps(row) + "\n"


def ticking(src: Source, loop: Prequential, progress: Progress) -> Iterator[Sample]:
    """Pass samples through (closing ``src`` at the end), giving ``progress`` a look every 64."""
    with src:
        for i, sample in enumerate(src):
            if i & 63 == 0:
                progress.tick(loop)
            yield sample


def summary_lines(
    r: Report, source: str, run: str, db: object, stopped: str | None, *, json_out: bool = False
) -> tuple[str, str]:
    """A finished run's summary: the line for stdout (accuracy, or a JSON ``summary`` object)
    and the one for stderr (why it ended, the counts, the layers, drifts, where it is saved)."""
    out = (
        report_json(r, kind="summary")
        if json_out
        else f"accuracy {r.accuracy:.4f} after {plural(r.samples, 'sample')} of {source}"
    )
    why = f"stopped by {stopped}" if stopped else "done"
    err = (
        f"{why}: {plural(r.samples, 'sample')} ({r.learned} learned, {r.rejected} rejected), kappa "
        f"{r.kappa:.4f}, layers {' '.join(f'{a:.4f}' for a in r.layer_accuracy)}, "
        f"{plural(r.drifts, 'drift')}; checkpoint of run {run!r} in {db}"
    )
    return out, err


def frames_summary_lines(
    r: Report,
    before: tuple[int, int],
    counts: dict[str, int],
    labels: object,
    source: str,
    run: str,
    db: object,
    stopped: str | None,
    *,
    json_out: bool = False,
) -> tuple[str | None, str]:
    """A finished frames run's summary, ``before`` its (samples, learned) when it began and
    ``counts`` the frames read, dropped and skipped. stdout keeps one format: with ``json_out``
    a summary object with the counts; else the accuracy line only when this run learned frames
    and predicted none (the predictions, JSON lines, are then the product), else None. The
    stderr line has the counts and the classes."""
    learned = r.learned - before[1]
    predicted = r.samples - before[0] - learned
    out: str | None = None
    if json_out:
        out = json.dumps({**json.loads(report_json(r, kind="summary")), **counts})
    elif learned and not predicted:
        out = f"accuracy {r.accuracy:.4f} after {plural(r.samples, 'sample')} of {source}"
    why = f"stopped by {stopped}" if stopped else "done"
    err = (
        f"{why}: {plural(r.samples, 'frame')} ({r.learned} learned, "
        f"{r.samples - r.learned} predicted), accuracy {r.accuracy:.4f}, "
        f"{counts['dropped']} dropped (the learner fell behind), {counts['skipped']} passed over "
        f"by --fps; classes {labels}; checkpoint of run {run!r} in {db}"
    )
    return out, err


def announced(
    src: Iterable[Sample], loop: Prequential, *, out: TextIO, changes: bool = False
) -> Iterator[Sample]:
    """Pass samples to the loop; once it has predicted an unlabelled one, write the prediction
    as a JSON line on ``out`` (the CLI passes its stdout); with ``changes`` only when the label
    changes."""
    shown: list[Any] = [object()]  # the label printed last (a sentinel before the first)

    def emit(sample: Sample, before: int) -> None:
        _, p = loop.last
        if sample.y is not None or loop.samples != before + 1 or p is None:
            return  # learned, not predicted; or the loop never stepped it
        if changes and p.label == shown[0]:
            return
        shown[0] = p.label
        row = {"kind": "prediction", "index": sample.index, "where": sample.where}
        row |= {"label": p.label, "confidence": round(p.confidence, 6), "layer": p.layer}
        out.write(json.dumps(row) + "\n")
        out.flush()

    for sample in src:
        before = loop.samples
        try:
            yield sample
        except GeneratorExit:  # the loop stopped (--limit) right after stepping this frame
            emit(sample, before)
            raise
        emit(sample, before)
