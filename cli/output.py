"""Formatting for the terminal: the progress table, the live line, JSON rows and tables.

Progress goes to stderr; only the command's product goes to stdout.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from spela_stream.prequential import Prequential, Report

HEADER = (
    "  samples  cum.acc roll.acc   kappa    label     pred  samples/s    model  forget"
    "  roll.acc per layer"
)


# The library names its parameters in backticks (`n_features`); the CLI says which flag sets each.
FLAGS = {
    "n_features": "--features",
    "label_column": "--label-column",
    "fmt": "--format",
    "skip": "--skip",
    "fps": "--fps",
    "size": "--size",
    "backbone": "--backbone",
}


def flagged(message: str) -> str:
    """A library message with each parameter it names given as the flag that sets it.

    >>> flagged("x.svm: pass `n_features`; `other` stays")
    'x.svm: pass --features; other stays'
    """
    return re.sub(r"`(\w+)`", lambda m: FLAGS.get(m[1], m[1]), message)


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
    """The progress table on stderr (or JSON rows on stdout), plus a live line on a terminal."""

    def __init__(
        self,
        *,
        json_out: bool = False,
        quiet: bool = False,
        err: TextIO | None = None,
        out: TextIO | None = None,
        live: bool | None = None,
    ) -> None:
        self.err = err or sys.stderr
        self.out = out or sys.stdout
        self.json_out = json_out
        self.quiet = quiet
        self.live = (not quiet and self.err.isatty()) if live is None else live
        self._header_done = False
        self._last_draw = 0.0
        self._drifts = 0
        self._live_shown = False

    def _clear_live(self) -> None:
        if self._live_shown:
            self.err.write("\r\x1b[K")
            self._live_shown = False

    def log(self, message: str) -> None:
        """A line of news on stderr (drift, checkpoint, resume)."""
        if not self.quiet:
            self._clear_live()
            print(flagged(message), file=self.err, flush=True)

    def report(self, r: Report) -> None:
        """A table row on stderr, or a JSON row on stdout with ``--json``."""
        if self.json_out:
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
