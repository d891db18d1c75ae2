"""The fleet on Flower (flwr >= 1.42, Message API): a ServerApp that merges, a ClientApp per device.

``server_app`` runs the rounds: it sends every connected device the fleet's model (its shared
arrays in an ``ArrayRecord``, its label order and which update of each device it holds in a
``ConfigRecord``), takes the answers that come within the round's timeout, merges them
(``spela_stream.fleet.merge``: FedAvg weighted by the samples each learned since the model it
took, standardiser statistics pooled exactly, the union of labels in the fleet's order), writes
the merged model to its folder *before* sending it (so a restarted server goes on from it), and
appends one JSON line per round to ``rounds.jsonl``. After the last round one more message,
``final``, hands every device the last merge.

``client_app`` is what the SuperNode starts for each message: it passes the message to its
device's learner (``node_config``: ``device`` and ``exchange``, the learner's 127.0.0.1 port;
``spela_stream.fleet_device``) and the learner's update back. The learner goes on learning
its own stream the whole time; this process lives for one message.

This module imports flwr: import it only where the ``fleet`` extra is installed.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from .fleet import Update, merge, shared_keys
from .fleet_wire import FleetError, exchange, pack, unpack

MODEL = "fleet.npz"
ROUNDS = "rounds.jsonl"


# ---------------------------------------------------------------------- the server's model on disk


def load_fleet(folder: Path) -> tuple[int, dict[str, Any] | None, dict[str, int]]:
    """The rounds done, the fleet's model (None before the first) and its contributions."""
    path = folder / MODEL
    if not path.exists():
        return 0, None, {}
    try:
        arrays, meta = unpack(path.read_bytes())
        return int(meta["round"]), {**arrays, "labels": meta["labels"]}, dict(meta["contributions"])
    except (ValueError, KeyError, TypeError, OSError, FleetError) as exc:
        raise FleetError(
            f"{path}: not a fleet model this server can go on from ({type(exc).__name__}: "
            f"{str(exc)[:120]}); move it aside to start the fleet afresh, or put back a good copy"
        ) from None


def save_fleet(
    folder: Path, done: int, model: dict[str, Any], contributions: dict[str, int]
) -> None:
    """Write the fleet's model whole or not at all, and durably: a temporary file, on disk
    (fsync), renamed over the old one, the rename on disk too (the folder's fsync), so a power
    loss leaves this round's model or the last one."""
    arrays = {k: v for k, v in model.items() if isinstance(v, np.ndarray)}
    blob = pack(arrays, {"round": done, "labels": model["labels"], "contributions": contributions})
    tmp = folder / (MODEL + ".tmp")
    with tmp.open("wb") as fh:
        fh.write(blob)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, folder / MODEL)
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def note(folder: Path, row: dict[str, Any]) -> None:
    """One line of the server's log of rounds (``spela-stream fleet server`` prints them)."""
    with (folder / ROUNDS).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


# ---------------------------------------------------------------------- records


def model_record(model: dict[str, Any] | None, done: int, contributions: dict[str, int],
                 final: bool = False) -> RecordDict:  # fmt: skip
    """The fleet's model as a Flower message's content."""
    arrays = {} if model is None else {
        k: Array(np.array(model[k], order="C")) for k in shared_keys(model)}  # fmt: skip
    labels = [] if model is None else list(model["labels"])
    meta = {"labels": labels, "round": done, "contributions": contributions, "final": final}
    return RecordDict(
        {"model": ArrayRecord(arrays), "meta": ConfigRecord({"json": json.dumps(meta)})}
    )


def record_parts(content: RecordDict) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A message's arrays and its meta (the inverse of ``model_record``)."""
    arrays = {k: a.numpy() for k, a in content.array_records["model"].items()}
    meta = json.loads(str(content.config_records["meta"]["json"]))
    return arrays, meta


# ---------------------------------------------------------------------- the ServerApp


def _wait_for_nodes(grid: Grid, least: int, wait: float) -> list[int]:
    until = time.monotonic() + wait
    nodes = list(grid.get_node_ids())
    while len(nodes) < least and time.monotonic() < until:
        time.sleep(0.5)
        nodes = list(grid.get_node_ids())
    return nodes


def serve(grid: Grid, context: Context) -> None:
    """The fleet's rounds (run config: fleet-dir, rounds, min-devices, wait, round-timeout,
    labels as JSON); a failure is a ``failed`` row in rounds.jsonl, then Flower's own report."""
    folder = Path(str(context.run_config["fleet-dir"]))
    try:
        rounds(grid, context, folder)
    except Exception as exc:
        note(folder, {"event": "failed", "error": f"{type(exc).__name__}: {exc}"})
        raise


def rounds(grid: Grid, context: Context, folder: Path) -> None:
    """Every round still to run, then the ``final`` message."""
    cfg = context.run_config
    total, timeout = int(cfg["rounds"]), float(cfg["round-timeout"])
    done, model, contributions = load_fleet(folder)
    declared = json.loads(str(cfg.get("labels", "[]")))
    base: dict[str, Any] | None = model if model is not None else (
        {"labels": declared} if declared else None)  # fmt: skip
    if done:
        note(folder, {"event": "resumed", "round": done})
    while done < total:
        nodes = _wait_for_nodes(grid, int(cfg["min-devices"]), float(cfg["wait"]))
        if not nodes:
            note(folder, {"event": "no devices", "round": done + 1})
            continue
        t0 = time.monotonic()
        content = model_record(model, done, contributions)
        down = content.array_records["model"].count_bytes()
        msgs = [Message(content, dst_node_id=n, message_type="train", group_id=str(done + 1))
                for n in nodes]  # fmt: skip
        replies = list(grid.send_and_receive(msgs, timeout=timeout))
        updates: dict[str, Update] = {}
        seqs: dict[str, int] = {}
        up = failed = correct = scored = 0
        for reply in replies:
            if reply.has_error():
                failed += 1
                continue
            arrays, meta = record_parts(reply.content)
            up += reply.content.array_records["model"].count_bytes()
            correct += int(meta["correct"])
            scored += int(meta["samples"])
            if not arrays or int(meta["learned"]) == 0:
                continue  # nothing new (or not built yet): it stays as the fleet has it
            state = {**arrays, "labels": meta["labels"], "config": meta["config"]}
            updates[str(meta["device"])] = Update(state, int(meta["learned"]), bool(meta["fresh"]))
            seqs[str(meta["device"])] = int(meta["seq"])
        row: dict[str, Any] = {"round": done + 1, "sent": len(nodes),
                               "answered": len(replies) - failed,
                               "failed": failed + len(nodes) - len(replies)}  # fmt: skip
        if updates:
            merged = merge(base, updates)
            model = base = merged.state
            contributions = {**contributions, **seqs}
            row.update(devices=merged.devices, learned=merged.learned, misaligned=merged.misaligned,
                       labels=len(merged.labels))  # fmt: skip
        done += 1
        if model is not None:
            save_fleet(folder, done, model, contributions)
        row.update(bytes_down=down * len(nodes), bytes_up=up,
                   seconds=round(time.monotonic() - t0, 3),
                   prequential=round(correct / scored, 4) if scored else None)  # fmt: skip
        note(folder, row)
    nodes = list(grid.get_node_ids())
    final = model_record(model, done, contributions, final=True)
    msgs = [Message(final, dst_node_id=n, message_type="train") for n in nodes]
    answered = [r for r in _send_and_receive(grid, msgs, timeout) if not r.has_error()]
    note(folder, {"event": "done", "round": done, "final_to": len(answered)})


def _send_and_receive(grid: Grid, msgs: list[Message], timeout: float,
                      poll: float = 0.25) -> list[Message]:  # fmt: skip
    """``grid.send_and_receive``, looking for the replies every ``poll`` seconds, not 3: a
    device stops its SuperNode soon after it answered the last message, and a reply the
    SuperLink still holds for a node that left is lost."""
    waiting = set(grid.push_messages(msgs))
    until = time.monotonic() + timeout
    replies: list[Message] = []
    while waiting and time.monotonic() < until:
        got = list(grid.pull_messages(waiting))
        replies += got
        waiting -= {r.metadata.reply_to_message_id for r in got}
        if waiting:
            time.sleep(poll)
    return replies


# ---------------------------------------------------------------------- the ClientApp


def train(msg: Message, context: Context) -> Message:
    """Hand the fleet's message to this device's learner and its update back."""
    address = str(context.node_config["exchange"])
    arrays, meta = record_parts(msg.content)
    try:
        answer = exchange(address, pack(arrays, meta), timeout=float(
            context.node_config.get("exchange-timeout", 120)))  # fmt: skip
    except FleetError as exc:
        raise FleetError(f"device {context.node_config.get('device')!r}: {exc}") from None
    arrays, meta = unpack(answer)
    content = RecordDict({
        "model": ArrayRecord({k: Array(np.array(v, order="C")) for k, v in arrays.items()}),
        "meta": ConfigRecord({"json": json.dumps(meta)}),
    })  # fmt: skip
    return Message(content, reply_to=msg)


server_app = ServerApp()
server_app.main()(serve)  # not as decorators: mypy checks this module without flwr too
client_app = ClientApp()
client_app.train()(train)
