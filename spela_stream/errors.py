"""Errors raised by spela-stream: one root, a subclass per concern.

Every message names the input that was wrong and, where there is one, the fix. The CLI turns a
``SpelaError`` into ``Error: ...`` and exit code 1; anything else escaping is a bug.
"""

from __future__ import annotations


class SpelaError(Exception):
    """Root of every error spela-stream raises on purpose."""


class ConfigError(SpelaError, ValueError):
    """A hyper-parameter or option has a value the model cannot use."""


class ModelError(SpelaError):
    """The model cannot do what was asked (for example, load a state it does not understand)."""


class InputError(ModelError, ValueError):
    """A sample given to the model is malformed; the model is left unchanged."""


class WidthError(InputError):
    """A feature vector has the wrong number of features, or a dict has unknown/missing keys."""


class NonFiniteError(InputError):
    """A feature vector holds NaN or infinity."""


class LabelError(InputError, TypeError):
    """A label is of a type the model cannot keep (labels are int, str or bool)."""


class SourceError(SpelaError):
    """A stream could not be read; the message carries the position (file, line)."""


class CheckpointError(SpelaError):
    """A checkpoint could not be written or read."""


class CheckpointDamagedError(CheckpointError):
    """A stored checkpoint fails its checksums or cannot be read: the file was changed."""


class DatabaseDamagedError(CheckpointDamagedError):
    """SQLite cannot read the database file itself: a page is garbled, or the file is cut short.

    ``why`` is what SQLite said, for a caller that reports it in its own words.
    """

    def __init__(self, message: str, why: str) -> None:
        super().__init__(message)
        self.why = why


class RunBusyError(CheckpointError):
    """Another live process holds the run's writer lease."""
