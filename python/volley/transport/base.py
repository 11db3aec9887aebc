"""The one transport interface; ``native`` (Rust, ``volley._core``) and ``python`` (pika) implement it.

Callers depend on these protocols only.  Connection problems surface as ``ConnectionError``
subclasses from both implementations, so one ``except`` serves either transport.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from volley.protocol.batches import BatchPart
from volley.protocol.codec import WireMessage
from volley.protocol.messages import Message
from volley.protocol.outcomes import PublishOutcome

# (exchange, routing_key, body, headers, timestamp)
OutgoingMessage = tuple[str, str, bytes, "dict[str, Any] | None", "int | None"]


class TransportError(ConnectionError):
    """The broker connection failed or was lost and could not be re-established."""


class ChannelClosedError(TransportError):
    """The broker closed the channel (missing queue, refused access, ...); ``code`` is the
    AMQP reply code, as on the native ``ChannelClosed``."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


# AMQP reply codes callers act on
NOT_FOUND = 404
ACCESS_REFUSED = 403
RESOURCE_LOCKED = 405
PRECONDITION_FAILED = 406


def channel_code(exc: BaseException) -> int | None:
    """The AMQP reply code of a channel closed by the broker (either transport), else None."""
    code = getattr(exc, "code", None)
    return code if isinstance(code, int) and isinstance(exc, ConnectionError) else None


class PublishTimeoutError(TimeoutError):
    """Publisher confirms did not arrive in time."""


class Delivery(Protocol):
    """One consumed message, as both transports hand it out (``volley._core.Delivery`` and
    :class:`PikaDelivery`).  ``message`` is the decoded envelope, or None with ``invalid``
    saying why the body is not a valid message; for a result batch, ``batch`` holds each
    result, or is None with ``invalid`` saying why the batch does not split."""

    @property
    def tag(self) -> int: ...
    @property
    def redelivered(self) -> bool: ...
    @property
    def exchange(self) -> str: ...
    @property
    def routing_key(self) -> str: ...
    @property
    def timestamp(self) -> int | None: ...
    @property
    def user_id(self) -> str | None:
        """The AMQP ``user_id`` property: RabbitMQ accepts a publish only with the user of the
        publishing connection here (or none), so it names who published the message."""
    @property
    def headers(self) -> dict[str, Any]: ...
    @property
    def body(self) -> bytes: ...
    @property
    def message(self) -> WireMessage | None: ...
    @property
    def invalid(self) -> str | None: ...
    @property
    def batch(self) -> Sequence[BatchPart] | None:
        """A result batch's results (``volley.protocol.batches``), when decoding and it splits."""


@dataclass(frozen=True, slots=True)
class PikaDelivery:
    """The pure-Python transport's :class:`Delivery`."""

    tag: int
    redelivered: bool
    exchange: str
    routing_key: str
    timestamp: int | None
    headers: dict[str, Any]
    body: bytes
    message: Message | None
    invalid: str | None
    batch: list[BatchPart] | None = None
    user_id: str | None = None


class Consumer(Protocol):
    def next_batch(self, max_messages: int = 1024, timeout: float | None = None) -> Sequence[Delivery]:
        """Wait (up to ``timeout``) for deliveries; return what is buffered, at most ``max_messages``."""

    def set_prefetch(self, count: int) -> None:
        """Change how many unacked deliveries the broker may push to this consumer, at once (a
        channel-wide ``basic.qos``); the prefetch it was opened with stays the ceiling."""

    def ack_through(self, tag: int) -> None:
        """Acknowledge every delivery up to and including ``tag``."""

    def ack(self, tag: int) -> None: ...

    def nack(self, tag: int, *, requeue: bool) -> None: ...

    def close(self) -> None: ...

    @property
    def closed(self) -> bool: ...


class Publisher(Protocol):
    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        headers: dict[str, Any] | None = None,
        timestamp: int | None = None,
        persistent: bool = True,
        mandatory: bool = False,
        content_type: str | None = None,
        timeout: float | None = 30.0,
        user_id: str | None = None,
    ) -> PublishOutcome:
        """Publish one message and wait for its confirm: ``"ack"``, ``"nack"`` or ``"returned"``.
        ``user_id`` sets the AMQP property, which the broker accepts only as the connection's
        own user (it closes the channel with 406 PRECONDITION_FAILED otherwise)."""

    def publish_batch(
        self,
        messages: Sequence[OutgoingMessage],
        *,
        persistent: bool = True,
        mandatory: bool = False,
        timeout: float | None = 30.0,
        user_id: str | None = None,
    ) -> list[PublishOutcome]:
        """Publish all, then wait for all confirms; one outcome per message, in order;
        ``user_id`` (as in :meth:`publish`) goes on every message."""

    def declare_exchange(self, name: str, kind: str, *, durable: bool = True, passive: bool = False) -> None: ...

    def declare_queue(
        self,
        name: str,
        *,
        durable: bool = True,
        passive: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> int: ...

    def bind_queue(self, queue: str, exchange: str, routing_key: str) -> None: ...

    def delete_queue(self, name: str) -> None: ...

    def close(self) -> None: ...

    @property
    def closed(self) -> bool: ...
