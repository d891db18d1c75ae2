"""spela-stream: continual learning from a stream with SPELA, one forward pass per sample."""

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
