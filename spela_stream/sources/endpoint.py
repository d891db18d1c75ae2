"""What the service (``spela_stream.service``) needs of a line source: a bounded queue of
requests and a way to answer each. ``LineServer`` (tcp.py) and ``MqttBridge`` (mqtt.py) are two."""

from __future__ import annotations

import queue
from typing import Any, Protocol


class LineRequest(Protocol):
    """One line to answer: ``raw`` without its newline, or ``problem`` for one not taken."""

    @property
    def raw(self) -> bytes: ...
    @property
    def where(self) -> str: ...
    @property
    def problem(self) -> str | None: ...


class Endpoint(Protocol):
    """Where lines come from and replies go: a ``LineServer`` (TCP) or an ``MqttBridge``."""

    requests: queue.Queue[Any]  # of LineRequest, bounded
    error: BaseException | None
    stats: Any  # a dataclass of counts, reported by the metrics control line

    @property
    def url(self) -> str: ...
    @property
    def alive(self) -> bool: ...
    def reply(self, request: Any, text: str, *, flush: bool = True) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...
