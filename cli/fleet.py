"""``spela-stream fleet``: devices that learn their own streams and share it through Flower.

``fleet server`` starts a Flower SuperLink and the fleet's run on it (rounds of FedAvg over the
devices' SPELA models, ``spela_stream.flower``) and prints one JSON line per round; ``fleet
device`` learns a stream into a run of its database, as ``learn`` does, with a Flower SuperNode
that takes part in the rounds. flwr is imported by neither command itself (its processes are),
and only looked for when a fleet command runs: without it, ``Error: ...`` and exit 1.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from .flags import option
from .options import fail, guarded

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
    guarded(_server, folder, rounds, port, min_devices, wait, round_timeout, _labels(labels),
            restarts)  # fmt: skip


def _server(folder: Path, rounds: int, port: int, min_devices: int, wait: float,
            round_timeout: float, labels: list[Any], restarts: int) -> None:  # fmt: skip
    from spela_stream.fleet_procs import FleetServer
    from spela_stream.stopping import StopGuard

    config = {"rounds": rounds, "min-devices": min_devices, "wait": wait,
              "round-timeout": round_timeout, "labels": json.dumps(labels)}  # fmt: skip
    fleet = FleetServer(folder, config, port, restarts, log=lambda m: typer.echo(m, err=True))
    with StopGuard() as guard:  # SIGTERM, Ctrl-C: the finally ends Flower's processes
        try:
            fleet.start()
            typer.echo(json.dumps({"event": "listening", "superlink": fleet.address}), err=True)
            for row in fleet.rows():
                typer.echo(json.dumps(row))
        finally:
            with guard.busy():  # a second signal does not cut the ending short
                fleet.stop()


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
    every: Annotated[int, option(DEVICE, "Checkpoint every N samples.", "--every",
                                 min=1)] = 1000,
) -> None:  # fmt: skip
    """Learn a stream as one device of a fleet: test-then-train into run NAME of --db
    (resumed if it is there), its model merged with the fleet's every round; checkpoints as
    learn does. The final report (JSON) on stdout."""
    _need_flwr()
    widths = tuple(int(h) for h in hidden.split(","))
    guarded(_device, superlink, name, source, db, widths, seed, _labels(labels), per_round,
            linger, every)  # fmt: skip


def _device(superlink: str, name: str, source: str, db: Path, hidden: tuple[int, ...],
            seed: int, labels: list[Any], per_round: int | None, linger: float,
            every: int) -> None:  # fmt: skip
    import torch

    from spela_stream.display import report_json
    from spela_stream.fleet_device import DeviceLink
    from spela_stream.fleet_procs import Keeper, end_strays, free_port, supernode
    from spela_stream.model import SpelaMLP
    from spela_stream.sources import open_source
    from spela_stream.stopping import StopGuard
    from storage import CheckpointStore
    from storage.run import Run

    torch.set_num_threads(1)

    def log(message: str) -> None:
        typer.echo(message, err=True)

    with CheckpointStore(db) as store, StopGuard() as guard:
        resumed = any(r.name == name for r in store.runs())
        if resumed:
            run = Run.resume(store, name, checkpoint_every=every, log=log)
        else:
            model = SpelaMLP(hidden=hidden, seed=seed)
            if labels:  # the fleet's order, before any sample (SpelaMLP takes no labels=)
                model = SpelaMLP.from_state({**model.state_dict(), "labels": labels})
            run = Run.start(store, model, source, name=name, checkpoint_every=every, log=log)
        link = DeviceLink(run.loop, name, resumed=resumed, per_round=per_round, linger=linger)
        config = {"device": name, "exchange": link.address}
        folder = db.parent / f"{db.name}.{name}.flower"
        if stray := end_strays(folder / "flwr-home"):  # a killed device's SuperNode, ClientApp
            log(f"device {name!r}: ended {len(stray)} Flower processes its last run left")
        try:
            with Keeper(lambda: supernode(superlink, free_port(), config, folder), log):
                log(f"device {name!r}: learning {run.source} into {db}, fleet at {superlink}")
                with open_source(run.source, skip=run.skip) as stream:
                    report = run.learn(link.wrap(stream), every=every, guard=guard)
                link.settle()  # the SuperNode stays until the answer to the last message left
        finally:
            link.close()
            end_strays(folder / "flwr-home")
    row = json.loads(report_json(report, "device"))
    row.update(device=name, rounds=link.rounds, bytes_in=link.bytes_in, bytes_out=link.bytes_out)
    typer.echo(json.dumps(row))
