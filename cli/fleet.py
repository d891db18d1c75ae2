"""``spela-stream fleet``: devices that learn their own streams and share it through Flower.

``fleet server`` starts a Flower SuperLink and the fleet's run on it (rounds of FedAvg over the
devices' SPELA models, ``spela_stream.flower``) and prints one JSON line per round; ``fleet
device`` learns a stream into a run of its database, as ``learn`` does, with a Flower SuperNode
that takes part in the rounds (the library's ``spela_stream.fleet_procs.serve_fleet`` and
``storage.fleet_run.run_device``). flwr is imported by neither command itself (its processes
are), and only looked for when a fleet command runs: without it, ``Error: ...`` and exit 1.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from .flags import option
from .options import fail, guarded, stderr

FLEET, DEVICE = "Fleet", "Device"
INSTALL = "pip install 'spela-stream[fleet]'"


class _NoBool:
    """``--help`` shows no ``<bool>`` (as cli.app's commands; that module imports this one)."""

    def get_help_option(self, ctx: Any) -> Any:
        found = super().get_help_option(ctx)  # type: ignore[misc]
        if found is not None:
            found.metavar = ""
        return found


class Group(_NoBool, TyperGroup):
    """The ``fleet`` group."""


class Command(_NoBool, TyperCommand):
    """A ``fleet`` command."""


app = typer.Typer(
    cls=Group,
    help="A fleet of devices merged by federated averaging on Flower (fleet server, fleet device).",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)


def _need_flwr() -> None:
    if importlib.util.find_spec("flwr") is None:
        raise fail(f"the fleet runs on Flower, which is not installed: {INSTALL}")


def _labels(value: str | None) -> list[Any]:
    """Declared labels, in the fleet's order: integers when every one is one, else text."""
    if not value:
        return []
    parts = [p.strip() for p in value.split(",")]
    if len(set(parts)) != len(parts) or not all(parts):
        raise typer.BadParameter(f"{value!r}: give distinct labels like 0,1,2 or cat,dog")
    try:
        return [int(p) for p in parts]
    except ValueError:
        return parts


Labels = Annotated[str | None, option(FLEET, "The fleet's labels in order, e.g. 0,1,2 or cat,dog "
                                      "(every device the same; declare them to keep "
                                      "classes aligned).", "--labels")]  # fmt: skip


@app.command(cls=Command)
def server(
    folder: Annotated[Path, option(FLEET, "Folder for the fleet's model and logs.", "--dir")] = (
        Path("fleet")),
    rounds: Annotated[int, option(FLEET, "Rounds to run.", "--rounds", min=1)] = 10,
    port: Annotated[int, option(FLEET, "SuperLink port on 127.0.0.1 (0: a free one).",
                                "--port", min=0)] = 0,
    min_devices: Annotated[int, option(FLEET, "Devices to wait for before a round.",
                                       "--min-devices", min=1)] = 1,
    wait: Annotated[float, option(FLEET, "Seconds to wait for them.", "--wait")] = 60.0,
    round_timeout: Annotated[float, option(FLEET, "Seconds a round waits for answers.",
                                           "--round-timeout")] = 120.0,
    labels: Labels = None,
    restarts: Annotated[int, option(FLEET, "Times the SuperLink, or the run whose ServerApp "
                                    "died, is started again (then Error, exit 1).",
                                    "--restarts", min=0)] = 5,
) -> None:  # fmt: skip
    """Run the fleet's server: a Flower SuperLink on 127.0.0.1 and the rounds; one JSON line
    per round on stdout (devices, samples learned, bytes, seconds), logs on stderr."""
    _need_flwr()
    from spela_stream.fleet_procs import serve_fleet

    guarded(serve_fleet, folder, rounds=rounds, port=port, min_devices=min_devices, wait=wait,
            round_timeout=round_timeout, labels=_labels(labels), restarts=restarts, log=stderr,
            row=lambda row: typer.echo(json.dumps(row)))  # fmt: skip


@app.command(cls=Command)
def device(
    superlink: Annotated[str, option(DEVICE, "The fleet server's SuperLink, HOST:PORT.",
                                     "--superlink")],
    name: Annotated[str, option(DEVICE, "This device's name in the fleet.", "--name")],
    source: Annotated[str, option(DEVICE, "What it learns (as learn --source).",
                                  "--source", "-s")] = "builtin:mnist",
    db: Annotated[Path, option(DEVICE, "Its checkpoint database.", "--db")] = Path("runs.db"),
    hidden: Annotated[str, option(DEVICE, "Layer widths (every device the same).",
                                  "--hidden")] = "1024,1024",
    seed: Annotated[int, option(DEVICE, "Seed of the class vectors (every device the same).",
                                "--seed")] = 0,
    labels: Labels = None,
    per_round: Annotated[int | None, option(DEVICE, "Learn at most N samples a round, then "
                                            "wait for the next (benchmarks).",
                                            "--per-round", min=1)] = None,
    linger: Annotated[float, option(DEVICE, "Seconds to stay in the fleet after the stream "
                                    "ends, for the last merge.", "--linger")] = 600.0,
    patience: Annotated[float, option(DEVICE, "Seconds nothing may listen at --superlink "
                                      "before the device counts the server gone: it stops "
                                      "waiting for rounds, and ends once its stream has.",
                                      "--patience", min=0)] = 60.0,
    every: Annotated[int, option(DEVICE, "Checkpoint every N samples.", "--every",
                                 min=1)] = 1000,
) -> None:  # fmt: skip
    """Learn a stream as one device of a fleet: test-then-train into run NAME of --db
    (resumed if it is there), its model merged with the fleet's every round; checkpoints as
    learn does. The final report (JSON) on stdout."""
    _need_flwr()
    from storage.fleet_run import run_device  # torch: only when a device runs

    widths, fleet_labels = tuple(int(h) for h in hidden.split(",")), _labels(labels)

    def learn() -> None:  # the final report on stdout
        row = run_device(superlink, name, source=source, db=db, hidden=widths, seed=seed,
                         labels=fleet_labels, per_round=per_round, linger=linger,
                         patience=patience, every=every, log=stderr)  # fmt: skip
        typer.echo(json.dumps(row))

    guarded(learn)
