"""Stopping a long run cleanly: SIGINT and SIGTERM become an exception at a sample boundary.

Light to import (no torch), so the command line can map ``Interrupted`` to an exit code without
loading the model.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; raised between samples, never inside one."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal number (130 for Ctrl-C)."""
        return 128 + self.signum


class StopGuard:
    """Turn SIGINT/SIGTERM into ``Interrupted`` at a sample boundary.

    While a sample is being learned or a checkpoint written (``with guard.busy():``) the signal
    only sets a flag, so no layer is left half-updated and no checkpoint half-handed; while the
    loop waits for input it raises at once, so a blocked read on a quiet pipe or socket does not
    hold a Ctrl-C hostage.
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> None:
        self.signals = signals
        self._busy = False
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        if not self._busy:
            raise Interrupted(signum)

    @property
    def is_busy(self) -> bool:
        """True inside ``busy()``: a signal waits for the next ``check``."""
        return self._busy

    @contextmanager
    def busy(self) -> Iterator[None]:
        """Hold signals off for the block (nestable); the caller ``check``s after it."""
        outer, self._busy = self._busy, True
        try:
            yield
        finally:
            self._busy = outer

    def check(self) -> None:
        """Raise ``Interrupted`` if a signal arrived while busy."""
        if self.signum is not None:
            raise Interrupted(self.signum)

    def __enter__(self) -> StopGuard:
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)
        self._old.clear()
