"""A prequential loop and its checkpoints: save one, or rebuild the loop from one.

The model's ``state_dict`` becomes the checkpoint's state (arrays and JSON); the loop's ``state``
(counts, position, metric state) is its metrics. Nothing else is needed to go on.
"""

from __future__ import annotations

from dataclasses import dataclass

from spela_stream.errors import CheckpointError, SpelaError
from spela_stream.prequential import Prequential

from .rebuild import rebuild_loop
from .records import CheckpointInfo, RunInfo
from .store import CheckpointStore


@dataclass
class Session:
    """A run's loop bound to the store it checkpoints into."""

    store: CheckpointStore
    run: str
    loop: Prequential
    source: str
    keep: int | None = None

    def save(self, loop: Prequential | None = None) -> int:
        """Checkpoint the model, the loop's state and the history gathered since the last one."""
        loop = loop or self.loop
        history = loop.pop_history()
        try:
            cid = self.store.save(
                self.run,
                state=loop.model.state_dict(),
                samples=loop.samples,
                source=self.source,
                position=loop.position,
                where=loop.where,
                metrics=loop.state(),
                history=history,
                keep=self.keep,
            )
        except SpelaError:
            loop.history[:0] = history  # not written: keep the rows for the next try
            raise
        return cid


__all__ = ["Session", "load_loop", "rebuild_loop"]


def load_loop(
    store: CheckpointStore, run: RunInfo, checkpoint: int | None = None, *, learn: bool = True
) -> tuple[Prequential, CheckpointInfo]:
    """Rebuild a run's model and loop from its latest checkpoint (or the one with that id)."""
    if run.checkpoints == 0 and checkpoint is None:
        raise CheckpointError(
            f"run {run.name!r} in {store.path} has no checkpoint yet "
            "(it stopped before its first one; learn it again under another --run)"
        )
    ck = store.load(run.name, checkpoint)
    return rebuild_loop(ck, f"checkpoint {ck.info.id} of run {run.name!r} in {store.path}",
                        learn=learn), ck.info  # fmt: skip
