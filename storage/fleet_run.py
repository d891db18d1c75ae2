"""One device of a fleet: a stream learned into a run of its database, as ``learn`` does, its
model merged with the fleet's every round through a Flower SuperNode
(``spela_stream.fleet_device.DeviceLink``, ``spela_stream.fleet_procs``). Nothing here imports
flwr (its processes do).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from spela_stream.fleet_device import DeviceLink
from spela_stream.fleet_procs import Keeper, end_strays, free_port, supernode
from spela_stream.model import SpelaMLP
from spela_stream.sources import open_source
from spela_stream.stopping import StopGuard

from .run import Run
from .store import CheckpointStore

__all__ = ["run_device"]


def run_device(
    superlink: str, name: str, *, source: str = "builtin:mnist", db: Path = Path("runs.db"),
    hidden: tuple[int, ...] = (1024, 1024), seed: int = 0, labels: Sequence[Any] = (),
    per_round: int | None = None, linger: float = 600.0, patience: float = 60.0,
    every: int = 1000, log: Callable[[str], None],
) -> dict[str, Any]:  # fmt: skip
    """Learn ``source`` test-then-train into run ``name`` of ``db`` (resumed if it is there, a
    new model of ``hidden``, ``seed`` and the fleet's ``labels`` if not), checkpointing every
    ``every`` samples, as one device of the fleet at ``superlink``; ``log`` hears the news.
    Nothing listening at ``superlink`` for ``patience`` seconds, once it was there: the server
    is gone (``DeviceLink``), and a device whose stream has ended ends without the last merge.
    The final report with the device's rounds, bytes and whether it got the fleet's last merge
    (``final``; the JSON row ``fleet device`` prints). A killed device's Flower processes on
    the same run are ended first."""
    torch.set_num_threads(1)
    with CheckpointStore(db) as store, StopGuard() as guard:
        resumed = any(r.name == name for r in store.runs())
        if resumed:
            run = Run.resume(store, name, checkpoint_every=every, log=log)
        else:
            model = SpelaMLP(hidden=hidden, seed=seed)
            if labels:  # the fleet's order, before any sample (SpelaMLP takes no labels=)
                model = SpelaMLP.from_state({**model.state_dict(), "labels": list(labels)})
            run = Run.start(store, model, source, name=name, checkpoint_every=every, log=log)
        link = DeviceLink(run.loop, name, resumed=resumed, per_round=per_round, linger=linger,
                          superlink=superlink, patience=patience, log=log)  # fmt: skip
        config = {"device": name, "exchange": link.address}
        folder = db.parent / f"{db.name}.{name}.flower"  # supernode and end_strays make it absolute
        if stray := end_strays(folder / "flwr-home"):  # a killed device's SuperNode, ClientApp
            log(f"device {name!r}: ended {len(stray)} Flower processes its last run left")
        try:
            with Keeper(lambda: supernode(superlink, free_port(), config, folder), log):
                log(f"device {name!r}: learning {run.source} into {db}, fleet at {superlink}")
                with open_source(run.source, skip=run.skip) as stream:
                    report = run.learn(link.wrap(stream), every=every, guard=guard)
                link.settle()  # the SuperNode stays until the answer to the last message left
                if not link.final:
                    log(f"device {name!r}: ended without the fleet's last merge (after "
                        f"{link.rounds} rounds); its checkpoint holds its own model, and run "
                        "again it takes the fleet's")  # fmt: skip
        finally:
            link.close()
            end_strays(folder / "flwr-home")
    row: dict[str, Any] = {"kind": "device", **asdict(report)}  # report_json's object
    row.update(device=name, rounds=link.rounds, final=link.final, bytes_in=link.bytes_in,
               bytes_out=link.bytes_out)  # fmt: skip
    return row
