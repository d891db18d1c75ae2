"""What a database holds: runs, checkpoints, and a run's learning curve."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer

from spela_stream.plot import CurveView
from storage import CheckpointStore
from storage.store import pick_run, verify_file

from .output import human_bytes, plural, shape_text, table


def list_runs(db: Path, json_out: bool) -> None:
    """The runs of a database, as a table or JSON lines."""
    with CheckpointStore(db, create=False, readonly=True) as store:
        store.check()  # a damaged file is said to be damaged, not listed as if sound
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
        forget = f"{s['forgetting']:.4f}" if s.get("forgetting") is not None else None
        worst = s.get("worst_class")  # [label, forgetting] or None
        worst_text = f"{worst[0]} ({worst[1]:.3f})" if worst else None
        memory = human_bytes(r.memory_bytes) if r.memory_bytes else None
        hidden = shape_text(r.config.get("hidden", []))
        rows.append([r.name, r.samples, acc, roll, forget, worst_text, memory, r.checkpoints,
                     hidden, r.source, r.updated])  # fmt: skip
    header = ["run", "samples", "accuracy", "rolling", "forgetting", "worst", "memory", "ckpts",
              "hidden", "source", "updated"]  # fmt: skip
    print(table(rows, header))


def list_checkpoints(db: Path, run: str | None, json_out: bool) -> None:
    """The checkpoints of a database (or one run), as a table or JSON lines."""
    with CheckpointStore(db, create=False, readonly=True) as store:
        store.check()
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


def plot(db: Path, run: str | None, output: Path, view: CurveView | None = None) -> None:
    """Write a run's learning curve as a PNG (matplotlib loads only here); with no ``run``,
    say on stderr which run it is."""
    from spela_stream.plot import learning_curve

    with CheckpointStore(db, create=False, readonly=True) as store:
        info = pick_run(store, run)
        history = store.history(info.name)
    if run is None:
        typer.echo(f"plotting run {info.name!r}, the latest (--run to choose)", err=True)
    learning_curve(history, info, output, view)
    typer.echo(str(output))


def verify(db: Path, run: str | None) -> None:
    """Print what ``CheckpointStore.verify`` finds, one line each; exit 1 unless sound."""
    report = verify_file(db, run)
    for line in report.integrity:
        print(f"damaged: {line}")
    for note in report.damaged:
        print(f"damaged: {note}")
    for note in report.unusable:
        print(f"unusable: {note}")
    if report.unchecked:
        print(f"unchecked: checkpoints {report.unchecked} were saved before checksums")
    if not report.readable:
        print(f"{report.path}: DAMAGED; SQLite cannot read it")
        raise typer.Exit(1)
    verdict = "sound" if report.sound else "DAMAGED"
    total = plural(report.checkpoints, "checkpoint")
    print(f"{report.path}: {verdict}; {report.intact} of {total} intact")
    if not report.sound:
        raise typer.Exit(1)
