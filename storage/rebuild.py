"""A loaded checkpoint's model and loop, or why this code cannot use its state.

Apart from the store (which it does not need) so that ``verify`` can rebuild what it checks;
it loads torch, so the store imports it only when a checkpoint is rebuilt.
"""

from __future__ import annotations

from spela_stream.errors import CheckpointError, SpelaError
from spela_stream.model import SpelaMLP
from spela_stream.prequential import Prequential

from .records import Checkpoint


def rebuild_loop(ck: Checkpoint, what: str, *, learn: bool = True) -> Prequential:
    """The model and loop a loaded checkpoint holds; a CheckpointError naming ``what`` when its
    state cannot be used (no loop state, keys missing, duplicate labels)."""
    if ck.metrics is None:
        raise CheckpointError(f"{what} has no loop state")
    try:
        model = SpelaMLP.from_state(ck.state)
        return Prequential.resumed(model, ck.metrics, learn=learn)
    except (SpelaError, KeyError, TypeError, ValueError) as exc:  # a state this code cannot use
        why = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        msg = f"{what} cannot be resumed: its state is incomplete ({why})"
        raise CheckpointError(msg) from None
