"""How a fleet's pieces talk on one machine: a model state as bytes, and framed messages.

A device's learner and its Flower ClientApp (a process the SuperNode starts for each message)
meet on a local TCP socket; each side sends one frame: an 8-byte length, then an ``.npz`` of
the state's arrays with the rest (labels, config, round, counts) as JSON in ``__meta__``.
No pickling: ``allow_pickle=False`` on the way in.

>>> import numpy as np
>>> blob = pack({"w": np.ones(2, np.float32)}, {"labels": ["a", 1, True]})
>>> arrays, meta = unpack(blob)
>>> arrays["w"].dtype.name, meta["labels"]
('float32', ['a', 1, True])
"""

from __future__ import annotations

import io
import json
import socket
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import SpelaError

META = "__meta__"
_LEN = struct.Struct(">Q")
MAX_FRAME = 1 << 31  # 2 GiB: far past any model; a garbled length is refused, not allocated


class FleetError(SpelaError):
    """A fleet's device, server or the link between them failed."""


def pack(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> bytes:
    """``arrays`` and the JSON-able ``meta`` as one ``.npz`` blob."""
    buf = io.BytesIO()
    payload = {k: np.asarray(v) for k, v in arrays.items()}
    payload[META] = np.frombuffer(json.dumps(dict(meta)).encode(), dtype=np.uint8)
    np.savez(buf, **payload)  # type: ignore[arg-type]
    return buf.getvalue()


def unpack(blob: bytes) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays and the meta of a ``pack``ed blob."""
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays.pop(META).tobytes().decode())
    return arrays, meta


def split_state(state: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A model state's arrays apart from its other values (labels, config, counts)."""
    arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    rest = {k: v for k, v in state.items() if not isinstance(v, np.ndarray)}
    return arrays, rest


def send_frame(sock: socket.socket, blob: bytes) -> None:
    """One length-prefixed frame."""
    sock.sendall(_LEN.pack(len(blob)) + blob)


def recv_frame(sock: socket.socket) -> bytes:
    """One length-prefixed frame; ``FleetError`` if the peer goes before it is whole."""
    head = _recv_exactly(sock, _LEN.size)
    (n,) = _LEN.unpack(head)
    if n > MAX_FRAME:
        raise FleetError(f"a frame of {n} bytes from the fleet's peer is past the limit")
    return _recv_exactly(sock, n)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    parts = bytearray()
    while len(parts) < n:
        chunk = sock.recv(min(n - len(parts), 1 << 20))
        if not chunk:
            raise FleetError("the fleet's peer closed the connection in the middle of a frame")
        parts += chunk
    return bytes(parts)


def exchange(address: str, blob: bytes, timeout: float) -> bytes:
    """Send ``blob`` to the device learner at ``address`` (HOST:PORT) and return its answer."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            send_frame(sock, blob)
            return recv_frame(sock)
    except OSError as exc:
        raise FleetError(f"the device's learner at {address} did not answer: {exc}") from None
