"""spela-stream: continual learning from a stream with SPELA, one forward pass per sample."""

from typing import TYPE_CHECKING, Any

from .errors import (
    CheckpointError,
    ConfigError,
    InputError,
    LabelError,
    ModelError,
    NonFiniteError,
    SourceError,
    SpelaError,
    WidthError,
)

if TYPE_CHECKING:
    from .model import Prediction, SpelaMLP

__all__ = [
    "CheckpointError",
    "ConfigError",
    "InputError",
    "LabelError",
    "ModelError",
    "NonFiniteError",
    "Prediction",
    "SourceError",
    "SpelaError",
    "SpelaMLP",
    "WidthError",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Import the model (and torch) on first use, so light tools start fast."""
    if name in ("Prediction", "SpelaMLP"):
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
