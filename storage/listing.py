"""What a database holds, as ``runs``, ``checkpoints`` and ``checkpoints verify`` show it: a
table or JSON lines of its runs and checkpoints, what verifying it found, and a run's learning
curve drawn from its history. Each reads the file read-only."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from spela_stream.display import human_bytes, plural, shape_text, table

from .records import CheckpointInfo, RunInfo, VerifyReport
from .store import CheckpointStore, pick_run

if TYPE_CHECKING:
    from spela_stream.plot import CurveView

RUN_HEADER = ["run", "samples", "accuracy", "rolling", "forgetting", "worst", "memory", "ckpts",
              "hidden", "source", "updated"]  # fmt: skip
CHECKPOINT_HEADER = ["id", "run", "samples", "position", "at", "created", "size"]


def runs_listing(db: str | Path, json_out: bool = False) -> list[str]:
    """The runs of ``db``: one JSON line each, or (one item) their table; a damaged file is
    said to be damaged (``StorageError``), not listed as if sound."""
    with CheckpointStore(db, create=False, readonly=True) as store:
        store.check()
        found = store.runs()
    return [json.dumps(asdict(r)) for r in found] if json_out else [runs_table(found)]


def runs_table(found: Sequence[RunInfo]) -> str:
    """A row per run: its latest metrics (blank where it has none), memory, checkpoints, shape."""
    rows = []
    for r in found:
        s = r.summary or {}
        acc = f"{s['accuracy']:.4f}" if "accuracy" in s else None
        roll = f"{s['rolling']:.4f}" if "rolling" in s else None
        forget = f"{s['forgetting']:.4f}" if s.get("forgetting") is not None else None
        worst = s.get("worst_class")  # [label, forgetting] or None
        worst_text = f"{worst[0]} ({worst[1]:.3f})" if worst else None
        memory = human_bytes(r.memory_bytes) if r.memory_bytes else None
        hidden = shape_text(r.config.get("hidden", []))
        rows.append([r.name, r.samples, acc, roll, forget, worst_text, memory, r.checkpoints,
                     hidden, r.source, r.updated])  # fmt: skip
    return table(rows, RUN_HEADER)


def checkpoints_listing(
    db: str | Path, run: str | None = None, json_out: bool = False
) -> list[str]:
    """The checkpoints of ``db`` (or of its run ``run``, which must exist): one JSON line each,
    or (one item) their table."""
    with CheckpointStore(db, create=False, readonly=True) as store:
        store.check()
        if run is not None:
            store.run(run)  # a clear error for a run that does not exist
        found = store.checkpoints(run)
    return [json.dumps(asdict(c)) for c in found] if json_out else [checkpoints_table(found)]


def checkpoints_table(found: Sequence[CheckpointInfo]) -> str:
    """A row per checkpoint: id, run, samples, source position, where, when and size."""
    rows = [
        [c.id, c.run, c.samples, c.position, c.where, c.created, human_bytes(c.bytes)]
        for c in found
    ]
    return table(rows, CHECKPOINT_HEADER)


def verify_lines(report: VerifyReport) -> list[str]:
    """What ``verify_file`` found, a line each, ending with the verdict (sound only when
    ``report.readable and report.sound``)."""
    lines = [f"damaged: {line}" for line in report.integrity]
    lines += [f"damaged: {note}" for note in report.damaged]
    lines += [f"unusable: {note}" for note in report.unusable]
    if report.unchecked:
        lines.append(f"unchecked: checkpoints {report.unchecked} were saved before checksums")
    if not report.readable:
        return [*lines, f"{report.path}: DAMAGED; SQLite cannot read it"]
    verdict = "sound" if report.sound else "DAMAGED"
    total = plural(report.checkpoints, "checkpoint")
    return [*lines, f"{report.path}: {verdict}; {report.intact} of {total} intact"]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def plot_run(
    db: str | Path,
    run: str | None,
    output: Path,
    view: CurveView | None = None,
    log: Callable[[str], None] = _stderr,
) -> RunInfo:
    """Draw run ``run``'s learning curve (``spela_stream.plot``; matplotlib loads only here)
    into ``output``; with no ``run`` the latest, which ``log`` names. Returns the run drawn."""
    from spela_stream.plot import learning_curve

    with CheckpointStore(db, create=False, readonly=True) as store:
        info = pick_run(store, run)
        history = store.history(info.name)
    if run is None:
        log(f"plotting run {info.name!r}, the latest (--run to choose)")
    learning_curve(history, info, output, view)
    return info
