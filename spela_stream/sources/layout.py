"""A service's record layout: given up front, taken from a trained model, or confirmed by lines.

A file's first line may fix its layout: the file is one writer's. A socket service has many
clients, and the first line any of them sends would fix the layout for all, so a stray ``1,2``
would train a one-feature model that persists. So a service's layout is one of:

- **given**: ``Layout(features=3)`` and/or ``Layout(columns=("a", "b", "c", "label"))`` (the
  header's names). A line that does not fit is refused with its line, field and the layout, and
  touches nothing.
- **the model's**: a trained (resumed) model's width.
- **confirmed**: with neither, the first lines are *held* (answered ``{"held": true, ...}``) until
  ``confirm`` of them (2 by default) agree on a feature count; then the held lines are read in
  order under that layout, learned or refused, and the service goes on. Nothing is learned, so
  no model is built, before that; lines still held when the service stops are refused.

>>> Layout(features=3).describe()
'the layout given: 3 features, then the label'
>>> Layout(columns=("a", "b", "label")).features
2
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ..errors import ConfigError
from .base import Sample

CONFIRM = 2  # lines of one feature count that confirm a layout nobody gave
HELD_MAX = 1000  # lines held at most while no layout is confirmed (the oldest are refused)
R = TypeVar("R")


@dataclass(frozen=True)
class Layout:
    """What every record line must look like: ``features`` numbers and, unless ``labelled`` is
    False, a label; ``columns`` names them all (a header), the label among them."""

    features: int | None = None
    columns: tuple[str, ...] | None = None
    labelled: bool = True
    origin: str = "given"  # "given", "of the trained model", "confirmed by the first lines"

    def __post_init__(self) -> None:
        if self.columns is not None:
            named = len(self.columns) - self.labelled
            if self.features is not None and self.features != named:
                raise ConfigError(
                    f"features={self.features} disagrees with the {len(self.columns)} columns "
                    f"{', '.join(self.columns)} ({named} features{' and a label' * self.labelled})"
                )
            if named < 1:
                raise ConfigError(f"columns {', '.join(self.columns)} hold no feature")
            object.__setattr__(self, "features", named)
        if self.features is None:
            raise ConfigError("a layout needs features, columns or both")
        if self.features < 1:
            raise ConfigError(f"features must be at least 1, got {self.features}")

    @property
    def width(self) -> int:
        """Fields per labelled CSV line."""
        assert self.features is not None
        return self.features + self.labelled

    def describe(self) -> str:
        """The layout in words, for messages: 'the layout given: 3 features, then the label'."""
        then = ", then the label" if self.labelled else ", no label"
        names = f" ({','.join(self.columns)})" if self.columns is not None else ""
        return f"the layout {self.origin}: {self.features} features{then}{names}"


@dataclass
class Held(Generic[R]):
    """Lines waiting for a layout to be confirmed: each with its request and feature count."""

    confirm: int = CONFIRM
    lines: list[tuple[R, int]] = field(default_factory=list)  # (request, index)
    counts: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.confirm < 1:
            raise ConfigError(f"confirm must be at least 1, got {self.confirm}")

    def hold(self, request: R, index: int, sample: Sample | None) -> int | None:
        """Keep a line (``sample``: how a fresh reader saw it, None for a header); returns the
        confirmed feature count once ``confirm`` samples agree on one."""
        self.lines.append((request, index))
        if sample is None:
            return None
        n = len(sample.x)
        self.counts[n] = self.counts.get(n, 0) + 1
        return n if self.counts[n] >= self.confirm else None

    def overflow(self) -> list[tuple[R, int]]:
        """The oldest lines beyond ``HELD_MAX``, taken out (to be refused)."""
        extra = len(self.lines) - HELD_MAX
        if extra <= 0:
            return []
        out, self.lines = self.lines[:extra], self.lines[extra:]
        return out

    def release(self) -> list[tuple[R, int]]:
        """Every held line, in arrival order, taken out."""
        out, self.lines = self.lines, []
        self.counts.clear()
        return out
