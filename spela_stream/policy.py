"""Which layer's prediction a SpelaMLP reports (a constant the command line reads without torch)."""

from __future__ import annotations

REPORTS: tuple[str, ...] = ("last", "confident", "early_exit", "vote")
