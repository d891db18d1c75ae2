"""The spela-stream command line: options -> library calls -> formatted output.

stdout carries only the command's product; progress and logs go to stderr.
"""

from __future__ import annotations

import json
from typing import Annotated

import torch
import typer

from spela_stream.datasets import iter_mnist
from spela_stream.errors import SpelaError
from spela_stream.model import REPORTS, SpelaMLP
from spela_stream.prequential import Report, prequential

app = typer.Typer(
    help="Learn continuously from a stream, one sample at a time, with SPELA.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Learn continuously from a stream, one sample at a time, with SPELA."""


def _parse_hidden(value: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(part) for part in value.split(","))
    except ValueError:
        raise typer.BadParameter(f"{value!r}: give layer widths like 1024,1024") from None
    if not widths or any(w < 1 for w in widths):
        raise typer.BadParameter(f"{value!r}: widths must be positive integers")
    return widths


def _row(r: Report) -> str:
    layers = " ".join(f"{a:.3f}" for a in r.layer_accuracy)
    return (
        f"{r.samples:>9d} {r.accuracy:>8.4f} {r.rolling_accuracy:>8.4f} "
        f"{r.last_label!s:>6} {r.last_prediction!s:>6} {r.samples_per_s:>9.0f}  {layers}"
    )


@app.command()
def learn(
    hidden: Annotated[str, typer.Option(help="SPELA layer widths, comma separated.")] = "1024,1024",
    lr: Annotated[float, typer.Option(help="Step size of every layer's local update.")] = 10.0,
    report: Annotated[str, typer.Option(help=f"Reported layer: {', '.join(REPORTS)}.")] = "last",
    limit: Annotated[int | None, typer.Option(help="Stop after this many samples.", min=1)] = None,
    every: Annotated[int, typer.Option(help="A progress row every N samples.", min=1)] = 1000,
    threads: Annotated[int, typer.Option(help="Torch CPU threads.", min=1)] = 1,
    json_out: Annotated[bool, typer.Option("--json", help="JSON report rows on stdout.")] = False,
) -> None:
    """Learn the embedded MNIST stream test-then-train and report prequential accuracy."""
    torch.set_num_threads(threads)  # a per-sample learner is memory bound: more threads rarely help
    try:
        model = SpelaMLP(hidden=_parse_hidden(hidden), lr=lr, report=report)  # type: ignore[arg-type]
    except SpelaError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo("  samples  cum.acc roll.acc  label   pred  samples/s  per-layer acc", err=True)
    last = None
    for last in prequential(model, iter_mnist(limit), every=every):
        if json_out:
            typer.echo(json.dumps(last.__dict__))
        typer.echo(_row(last), err=True)
    if last is not None and not json_out:
        typer.echo(f"accuracy {last.accuracy:.4f} after {last.samples} samples of builtin:mnist")


def main() -> None:
    """Console-script entry point."""
    app(prog_name="spela-stream")


if __name__ == "__main__":
    main()
