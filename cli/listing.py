"""``runs``, ``checkpoints``, ``checkpoints verify`` and ``plot``: ``storage.listing`` printed."""

from __future__ import annotations

from pathlib import Path

import typer

from spela_stream.plot import CurveView
from storage import listing
from storage.store import verify_file


def list_runs(db: Path, json_out: bool) -> None:
    """The runs of a database, as a table or JSON lines."""
    for line in listing.runs_listing(db, json_out):
        print(line)


def list_checkpoints(db: Path, run: str | None, json_out: bool) -> None:
    """The checkpoints of a database (or one run), as a table or JSON lines."""
    for line in listing.checkpoints_listing(db, run, json_out):
        print(line)


def plot(db: Path, run: str | None, output: Path, view: CurveView | None = None) -> None:
    """Write a run's learning curve as a PNG; with no ``run``, say on stderr which run it is."""
    listing.plot_run(db, run, output, view, log=lambda m: typer.echo(m, err=True))
    typer.echo(str(output))


def verify(db: Path, run: str | None) -> None:
    """Print what ``CheckpointStore.verify`` finds, one line each; exit 1 unless sound."""
    report = verify_file(db, run)
    for line in listing.verify_lines(report):
        print(line)
    if not (report.readable and report.sound):
        raise typer.Exit(1)
