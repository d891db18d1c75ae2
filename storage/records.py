"""What the store hands back: plain frozen records of runs and checkpoints."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from spela_stream.errors import CheckpointError


@dataclass(frozen=True)
class RunInfo:
    """One run: its config and source at creation, progress and latest metrics summary."""

    name: str
    config: dict[str, Any]
    source: str
    created: str
    updated: str
    samples: int
    checkpoints: int
    summary: dict[str, Any] | None
    memory_bytes: int = 0  # tensors named memory.* in the latest checkpoint (a replay memory)


@dataclass(frozen=True)
class CheckpointInfo:
    """One checkpoint's row, without its state: where in the stream and how big."""

    id: int
    run: str
    samples: int
    source: str
    position: int
    where: str
    created: str
    bytes: int
    tensors: int


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: its row, the state (arrays and JSON values merged) and metrics.

    ``damaged`` lists, one note each, the newer checkpoints that ``load`` passed over because
    they are damaged; the caller shows them as warnings.
    """

    info: CheckpointInfo
    state: dict[str, Any]
    metrics: dict[str, Any] | None
    damaged: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class VerifyReport:
    """What ``CheckpointStore.verify`` found: SQLite's own check and every checkpoint's."""

    path: str
    integrity: list[str]  # SQLite integrity_check's complaints; empty when it says ok
    checkpoints: int  # checkpoints examined
    intact: int  # of which every checksum matched
    unchecked: list[int]  # ids saved before checksums existed (read, but not verifiable)
    damaged: list[str]  # one note per damaged checkpoint, naming run, id and what
    readable: bool = True  # False when SQLite cannot open the file at all
    # one note per checkpoint whose checksums hold but whose state cannot be rebuilt
    unusable: list[str] = field(default_factory=list)

    @property
    def sound(self) -> bool:
        """True when SQLite finds nothing wrong and every checkpoint is intact and usable."""
        return not self.integrity and not self.damaged and not self.unusable


def parse_json(text: str | None, what: str) -> Any:
    """``json.loads``, with CheckpointError naming ``what`` for text that is not JSON."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{what} is corrupt: its JSON does not parse ({exc})") from None


def run_info(row: sqlite3.Row) -> RunInfo:
    """A RunInfo from a row of ``runs`` with its checkpoint count."""
    what = f"run {row['name']!r}"
    return RunInfo(
        name=row["name"],
        config=parse_json(row["config"], what),
        source=row["source"],
        created=row["created"],
        updated=row["updated"],
        samples=row["samples"],
        checkpoints=row["checkpoints"],
        summary=parse_json(row["summary"], what),
        memory_bytes=row["memory_bytes"],
    )
