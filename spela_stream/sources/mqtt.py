"""An MQTT subscription as a line endpoint: one message per record, one reply per message.

``MqttBridge`` subscribes to a topic filter (wildcards allowed) at QoS 1 and offers the service
(``spela_stream.service``) what a ``LineServer`` offers: ``requests``, a bounded queue of
messages for the model's thread, and ``reply(request, text)``, which publishes the answer (to
``--publish TOPIC``, or to the MQTT 5 response topic a message names) and only then acknowledges
the message. So a message is acknowledged once it has been learned, and one the learner never
got to is delivered again. In flight: the broker is asked to send at most ``window`` messages
unacknowledged (MQTT 5 Receive Maximum), and the queue holds ``window``; when it is full, paho's
network thread waits, so a broker that sends more anyway (mosquitto 2.0.11 does, after the first
acknowledgements) is held back by TCP: at most ``window + 1`` messages wait in memory.

QoS 1 is at least once: when the connection breaks (the broker restarted, say), the broker
sends again what it had not heard acknowledged, and a publisher sends again what it had not,
which the broker passes on as new messages. So duplicates come right after a reconnect. The
bridge keeps digests (topic and payload) of the last ``dedup`` messages; for the ``dedup``
messages after a reconnect, one matching a message from before it is acknowledged, counted
(``stats.duplicates``) and not learned again, each earlier message matching once. In steady
flow nothing is dropped: identical readings are data, not duplicates. ``dedup=0`` turns it off.

paho-mqtt is imported only when a bridge is made, so the base install needs none of it
(``pip install 'spela-stream[mqtt]'``). The broker going away is not an error: paho reconnects
with backoff (1 s doubling to ``max_backoff``), the session (its subscription and the messages
queued for it) survives when the broker keeps it, and ``stats.reconnects`` counts the returns.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from ..errors import SourceError

SCHEME = "mqtt://"
DEFAULT_PORT = 1883
WINDOW = 64  # messages delivered and not yet acknowledged (MQTT 5 Receive Maximum)
DEDUP = 1000  # messages remembered across a reconnect, to tell a QoS 1 redelivery from news
MAX_LINE = 1 << 20
CONNECT_TIMEOUT_S = 10.0
SESSION_EXPIRY_S = 600  # how long the broker keeps the subscription while the bridge is away
MAX_BACKOFF_S = 30
OUTBOX = 10_000  # replies waiting to be published before more are dropped (and counted)
PUT_POLL_S = 0.2
CLOSE_GRACE_S = 5.0  # how long close() waits for the broker to take the last replies


def parse_url(url: str) -> tuple[str, int, str]:
    """``mqtt://HOST[:PORT]/TOPIC`` as (host, port, topic filter); the port defaults to 1883.

    >>> parse_url("mqtt://127.0.0.1:1884/sensors/+/mnist")
    ('127.0.0.1', 1884, 'sensors/+/mnist')
    >>> parse_url("mqtt://broker/#")
    ('broker', 1883, '#')
    """
    rest = url[len(SCHEME) :] if url.startswith(SCHEME) else None
    address, slash, topic = (rest or "").partition("/")
    host, colon, port_text = address.rpartition(":") if ":" in address else (address, "", "")
    ok = rest is not None and slash and topic and host
    if ok and colon and (not port_text.isdigit() or not 0 < int(port_text) <= 65535):
        ok = False
    if not ok:
        raise SourceError(
            f"{url}: not an MQTT subscription; write mqtt://HOST:PORT/TOPIC, like "
            "mqtt://127.0.0.1:1883/sensors/# (+ and # are wildcards; quote # in a shell)"
        )
    return host.strip("[]"), int(port_text) if colon else DEFAULT_PORT, topic


def url_of(host: str, port: int, topic: str) -> str:
    """``mqtt://HOST:PORT/TOPIC``."""
    name = f"[{host}]" if ":" in host else host
    return f"{SCHEME}{name}:{port}/{topic}"


@dataclass(frozen=True, slots=True)
class MqttRequest:
    """One message: ``raw`` payload (a trailing newline dropped) or ``problem``; ``where`` reads
    ``mqtt sensors/a message 7``. ``mid`` and ``session`` say what to acknowledge, and on which
    connection (an acknowledgement belongs to the connection that delivered the message)."""

    topic: str
    raw: bytes
    where: str
    mid: int
    session: int
    problem: str | None = None
    response_topic: str | None = None
    correlation: bytes | None = None


@dataclass
class MqttStats:
    """What the bridge has seen (read by the model's thread for a metrics reply)."""

    messages: int = 0  # handed to the queue
    duplicates: int = 0  # QoS 1 redeliveries acknowledged and not learned again
    overlong: int = 0
    blank: int = 0  # empty payloads (a cleared retained message, say): acknowledged, skipped
    connected: bool = False
    reconnects: int = 0
    published: int = 0
    replies_dropped: int = 0  # the outgoing queue was full, or no topic to answer on


def _paho() -> Any:
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        raise SourceError(
            "mqtt:// needs paho-mqtt, which is not installed: pip install 'spela-stream[mqtt]'"
        ) from None
    return mqtt


class MqttBridge:
    """Subscribe to ``topic`` on ``host:port`` and serve its messages as requests.

    Raises ``SourceError`` when the broker cannot be reached or refuses the connection or the
    subscription within ``connect_timeout`` seconds. ``publish`` is the topic replies go to
    (``{topic}`` in it stands for the message's topic); without it, and without a response topic
    in the message, a reply only acknowledges the message.
    """

    def __init__(
        self,
        host: str,
        port: int,
        topic: str,
        *,
        publish: str | None = None,
        client_id: str | None = None,
        window: int = WINDOW,
        dedup: int = DEDUP,
        max_line: int = MAX_LINE,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        max_backoff: int = MAX_BACKOFF_S,
    ) -> None:
        if window < 1 or dedup < 0 or max_line < 1:
            raise SourceError("window and max_line must be at least 1, dedup 0 or more")
        if publish is not None and (not publish or "+" in publish or "#" in publish):
            raise SourceError(
                f"--publish {publish!r}: a reply topic is a plain topic (no + or # wildcards)"
            )
        mqtt = _paho()
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.host, self.port, self.topic = host, port, topic
        self.publish = publish
        self.window = window
        self.dedup = dedup
        self.max_line = max_line
        self.connect_timeout_s = connect_timeout
        self.requests: queue.Queue[MqttRequest] = queue.Queue(window)
        self.stats = MqttStats()
        self.error: BaseException | None = None
        self._mqtt = mqtt
        self._props: tuple[Any, Any] = (Properties, PacketTypes)  # made lazily, as paho is
        self._seen: deque[bytes] = deque(maxlen=dedup)  # digests of the latest messages
        self._before: Counter[bytes] = Counter()  # those from before the last reconnect
        self._check_left = 0  # messages after a reconnect still compared with _before
        self._session = 0  # bumped per connection
        self._count = 0
        self._closing = False
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._refused: str | None = None
        self._sub_mid: int | None = None
        name = client_id or f"spela-stream-{uuid.uuid4().hex[:12]}"
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5,
            manual_ack=True,
        )  # fmt: skip
        client.reconnect_delay_set(min_delay=1, max_delay=max_backoff)
        client.max_queued_messages_set(OUTBOX)
        client.max_inflight_messages_set(256)
        self._outgoing: deque[Any] = deque()  # replies not yet acknowledged by the broker
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        props.ReceiveMaximum = window
        try:
            client.connect(host, port, keepalive=30, properties=props,
                           clean_start=mqtt.MQTT_CLEAN_START_FIRST_ONLY)  # fmt: skip
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise SourceError(
                f"{self.url}: cannot reach the broker: {reason} (is it running? check the host "
                "and port of --source)"
            ) from None
        client.loop_start()
        try:
            self._wait(self._connected, "connect")
            self._wait(self._subscribed, "subscribe")
        except BaseException:
            self._stop()
            raise

    @property
    def url(self) -> str:
        """The subscription, as ``mqtt://HOST:PORT/TOPIC``."""
        return url_of(self.host, self.port, self.topic)

    @property
    def alive(self) -> bool:
        """True until ``close``: while the broker is away the bridge waits to reconnect."""
        return not self._closing

    def _wait(self, event: threading.Event, what: str) -> None:
        if not event.wait(self.connect_timeout_s):
            raise SourceError(
                f"{self.url}: no answer to {what} within {self.connect_timeout_s:g} s (is it an "
                "MQTT broker? check the port)"
            )
        if self._refused is not None:
            raise SourceError(f"{self.url}: {self._refused}")

    # ------------------------------------------------------------------ the model's side

    def reply(self, request: MqttRequest, text: str, *, flush: bool = True) -> None:
        """Publish the answer to ``request`` (if there is a topic for it), then acknowledge it."""
        topic = request.response_topic
        if topic is None and self.publish is not None:
            topic = self.publish.replace("{topic}", request.topic)
        if topic is not None:
            Properties, PacketTypes = self._props
            props = None
            if request.correlation is not None:
                props = Properties(PacketTypes.PUBLISH)
                props.CorrelationData = request.correlation
            info = self._client.publish(topic, text.encode("utf-8"), qos=1, properties=props)
            if info.rc == self._mqtt.MQTT_ERR_SUCCESS:
                self.stats.published += 1
                self._outgoing.append(info)
                while self._outgoing and self._outgoing[0].is_published():
                    self._outgoing.popleft()
            else:
                self.stats.replies_dropped += 1
        self._ack(request)

    def flush(self) -> None:
        """Replies are published as they are given; nothing waits."""

    def _ack(self, request: MqttRequest) -> None:
        if request.session == self._session and request.mid:  # else the broker sends it again
            with contextlib.suppress(ValueError, RuntimeError):
                self._client.ack(request.mid, 1)

    def close(self) -> None:
        """Wait briefly for the replies in flight, then disconnect (ending the session)."""
        if self._closing:
            return
        self._closing = True
        self._stop()

    def _stop(self) -> None:
        self._closing = True
        client = self._client
        with contextlib.suppress(Exception):  # a broker already gone: nothing to say goodbye to
            Properties, PacketTypes = self._props
            props = Properties(PacketTypes.DISCONNECT)
            props.SessionExpiryInterval = 0
            deadline = time.monotonic() + CLOSE_GRACE_S
            while self._outgoing and self.stats.connected and time.monotonic() < deadline:
                if self._outgoing[0].is_published():  # the broker has it: it will be delivered
                    self._outgoing.popleft()
                else:
                    time.sleep(0.01)
            client.disconnect(properties=props)
        client.loop_stop()

    def __enter__(self) -> MqttBridge:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ paho's thread

    def _on_connect(self, client: Any, _: Any, flags: Any, reason: Any, __: Any) -> None:
        if reason.is_failure:
            self._refused = f"the broker refused the connection: {reason}"
            self._connected.set()
            self._subscribed.set()
            return
        self._session += 1
        if self._connected.is_set():
            self.stats.reconnects += 1
            self._before = Counter(self._seen)
            self._check_left = self.dedup
        self.stats.connected = True
        self._connected.set()
        if not flags.session_present:  # a fresh session (or the broker forgot it): subscribe
            try:
                _, self._sub_mid = client.subscribe(self.topic, qos=1)
            except ValueError as exc:
                self._refused = f"cannot subscribe to {self.topic!r}: {exc}"
                self._subscribed.set()
        else:
            self._subscribed.set()

    def _on_subscribe(self, _: Any, __: Any, mid: int, codes: Any, ___: Any) -> None:
        bad = [c for c in codes if c.is_failure]
        if bad:
            self._refused = (
                f"the broker refused the subscription to {self.topic!r}: {bad[0]} (is the "
                "topic filter well formed, and may this client read it?)"
            )
        self._subscribed.set()

    def _on_disconnect(self, *_: Any) -> None:
        self.stats.connected = False

    def _on_message(self, client: Any, _: Any, message: Any) -> None:
        payload: bytes = message.payload
        mid = message.mid if message.qos > 0 else 0
        session = self._session
        if payload.endswith(b"\n"):
            payload = payload[:-2] if payload.endswith(b"\r\n") else payload[:-1]
        if not payload.strip():
            self.stats.blank += 1
            self._ack_now(mid)
            return
        if self.dedup and self._duplicate(message.topic, payload):
            self.stats.duplicates += 1
            self._ack_now(mid)
            return
        self._count += 1
        where = f"mqtt {message.topic} message {self._count}"
        problem = None
        if len(payload) > self.max_line:
            self.stats.overlong += 1
            problem = f"message longer than {self.max_line} bytes, skipped (one record a message)"
            payload = b""
        elif b"\n" in payload:
            problem = "a message holds one record; this one has several lines (publish each alone)"
            payload = b""
        props = getattr(message, "properties", None)
        response = getattr(props, "ResponseTopic", None) if props is not None else None
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        request = MqttRequest(message.topic, payload, where, mid, session, problem,
                              response, correlation)  # fmt: skip
        self.stats.messages += 1
        while not self._closing:  # the window keeps this short; a full queue holds paho back
            try:
                self.requests.put(request, timeout=PUT_POLL_S)
                return
            except queue.Full:
                continue

    def _duplicate(self, topic: str, payload: bytes) -> bool:
        """True for a message that repeats one from before the last reconnect."""
        key = hashlib.blake2b(topic.encode() + b"\0" + payload, digest_size=16).digest()
        if self._check_left > 0:
            self._check_left -= 1
            if self._before[key] > 0:
                self._before[key] -= 1
                return True
        self._seen.append(key)
        return False

    def _ack_now(self, mid: int) -> None:
        if mid:
            with contextlib.suppress(ValueError, RuntimeError):
                self._client.ack(mid, 1)
