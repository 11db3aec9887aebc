"""Native core of Volley (Rust: pyo3 + tokio + lapin).

The messagepack v1 codec, a streaming AMQP consumer that hands out batches with the GIL
released while waiting, and a publisher with batched publisher confirms. Checked against the
compiled module by ``python -m mypy.stubtest volley._core``.
"""

from collections.abc import Sequence
from typing import Any, Literal, final

__all__ = [
    "AmqpConnectionError",
    "ChannelClosed",
    "CodecError",
    "Consumer",
    "CoreError",
    "Delivery",
    "ForkError",
    "Message",
    "PublishTimeout",
    "Publisher",
    "__version__",
    "decode",
    "pack_result",
    "pack_status_report",
    "pack_task",
]

__version__: str

class CoreError(Exception):
    """Base class of the errors raised by volley._core."""

class AmqpConnectionError(CoreError, ConnectionError):
    """Could not connect, the connection was lost and retries were exhausted, or the broker
    refused the login; the message names the cause and the fix."""

class ChannelClosed(AmqpConnectionError):
    """The broker closed the channel (e.g. 404 NOT_FOUND, 403 ACCESS_REFUSED); the message
    includes the broker's reply text and ``code`` the AMQP reply code."""

    code: int

class CodecError(CoreError, ValueError):
    """A body that is not a valid messagepack v1 message, or invalid input to a packer; the text
    names the field."""

class ForkError(CoreError, RuntimeError):
    """A Consumer or Publisher created before fork() was used in the child process."""

class PublishTimeout(CoreError, TimeoutError):
    """Publisher confirms did not arrive in time."""

@final
class Message:
    """A decoded envelope; the same attributes as ``volley.protocol.messages.Message``.

    ``data`` is ``Result.data`` for results and ``Task.task_buffer`` for tasks; ``details`` is
    the JSON text of ``Result.details`` (or ``EPStatusReport.global_state``); ``task_statuses``
    the JSON text of the transitions.
    """

    def __new__(
        cls,
        kind: str,
        task_id: str | None = None,
        endpoint_id: str | None = None,
        data: str | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
        details: str | None = None,
        task_statuses: str | None = None,
    ) -> Message: ...
    @property
    def kind(self) -> str: ...
    @property
    def task_id(self) -> str | None: ...
    @property
    def endpoint_id(self) -> str | None: ...
    @property
    def data(self) -> str | None: ...
    @property
    def error_code(self) -> str | None: ...
    @property
    def error_message(self) -> str | None: ...
    @property
    def details(self) -> str | None: ...
    @property
    def task_statuses(self) -> str | None: ...
    @property
    def is_error(self) -> bool: ...
    def details_dict(self) -> dict[str, Any] | None:
        """``json.loads(details)``, or None."""
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class Delivery:
    """One message taken from the queue by :meth:`Consumer.next_batch`."""

    @property
    def tag(self) -> int:
        """Unique per Consumer across reconnects, strictly increasing."""
    @property
    def redelivered(self) -> bool: ...
    @property
    def exchange(self) -> str: ...
    @property
    def routing_key(self) -> str: ...
    @property
    def timestamp(self) -> int | None:
        """The AMQP ``timestamp`` property."""
    @property
    def user_id(self) -> str | None:
        """The AMQP ``user_id`` property: RabbitMQ refuses a publish whose ``user_id`` is not
        the publishing connection's user, so it names who published the message (or is None)."""
    @property
    def headers(self) -> dict[str, Any]:
        """The AMQP headers (a new dict on each access): str, int, float, bool, bytes, None,
        list and dict values."""
    @property
    def body(self) -> bytes: ...
    @property
    def message(self) -> Message | None:
        """The decoded envelope, when the Consumer decodes and the body is valid."""
    @property
    def invalid(self) -> str | None:
        """Why decoding failed (``message`` is then None)."""
    @property
    def batch(self) -> list[tuple[bytes, Message | None, str | None]] | None:
        """When the Consumer decodes and the delivery is a result batch (header
        ``volley-batch``) that splits: each result's ``(body, message, invalid)``, decoded off
        the GIL; a batch that does not split leaves this None and says why in ``invalid``."""

@final
class Consumer:
    """Consume one queue with manual acks.

    Connects (GIL released), sets ``basic_qos(prefetch)`` (per consumer: the ceiling) and, with
    ``channel_prefetch``, a channel-wide limit that :meth:`set_prefetch` changes later, and
    subscribes. A lost connection is reported at once (the next ``next_batch`` raises) and the
    caller's one reconnect policy (``volley.transport.reconnect``) opens a new Consumer;
    deliveries not acked on the old connection are redelivered by the broker. Raises
    AmqpConnectionError / ChannelClosed.
    """

    def __new__(
        cls,
        url: str,
        queue: str,
        *,
        ca_file: str | None = None,
        port: int | None = None,
        prefetch: int = 1000,
        exclusive: bool = False,
        decode: bool = True,
        channel_prefetch: int | None = None,
    ) -> Consumer: ...
    def next_batch(self, max_messages: int = 1024, timeout: float | None = None) -> list[Delivery]:
        """Block (GIL released, Ctrl-C honoured) until at least one delivery is available, then
        return up to ``max_messages`` already buffered. ``[]`` on timeout or after close();
        AmqpConnectionError when reconnecting failed."""
    def set_prefetch(self, count: int) -> None:
        """Change the prefetch of the running consumer (a channel-wide ``basic.qos``, kept
        across its own reconnects); the ``prefetch`` it was created with stays the ceiling."""
    def ack_through(self, tag: int) -> None:
        """Ack every delivery up to ``tag`` (``multiple=True``); a tag of an earlier connection
        is a no-op."""
    def ack(self, tag: int) -> None: ...
    def nack(self, tag: int, *, requeue: bool) -> None:
        """``requeue=False`` dead-letters the message when the queue has a DLX."""
    def close(self) -> None:
        """Prompt and idempotent; callable from any thread, also while another thread waits in
        next_batch (which then returns ``[]``)."""
    @property
    def closed(self) -> bool: ...

@final
class Publisher:
    """Publish with publisher confirms; may be used from several threads at once.

    A connection found lost before anything is sent is re-opened transparently; one lost while
    confirms are outstanding raises AmqpConnectionError (the caller decides whether to retry).
    With ``confirms=False`` every outcome is ``"ack"`` once the message is written.
    """

    def __new__(
        cls, url: str, *, ca_file: str | None = None, port: int | None = None, confirms: bool = True
    ) -> Publisher: ...
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
    ) -> Literal["ack", "nack", "returned"]:
        """``"ack"``, ``"nack"`` or ``"returned"`` (mandatory and unroutable).  ``user_id``
        sets the AMQP property, which the broker accepts only as the connection's own user."""
    def publish_batch(
        self,
        messages: Sequence[tuple[str, str, bytes, dict[str, Any] | None, int | None]],
        *,
        persistent: bool = True,
        mandatory: bool = False,
        timeout: float | None = 30.0,
        user_id: str | None = None,
    ) -> list[Literal["ack", "nack", "returned"]]:
        """Each tuple is ``(exchange, routing_key, body, headers, timestamp)``. Publishes all,
        then awaits all confirms together; one outcome per message, in order; ``user_id`` (as
        in :meth:`publish`) goes on every message. Raises PublishTimeout / AmqpConnectionError."""
    def declare_exchange(
        self, name: str, kind: str, *, durable: bool = True, passive: bool = False
    ) -> None: ...
    def declare_queue(
        self,
        name: str,
        *,
        durable: bool = True,
        passive: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> int:
        """Returns the queue's message count."""
    def bind_queue(self, queue: str, exchange: str, routing_key: str) -> None: ...
    def delete_queue(self, name: str) -> None: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...

def pack_task(task_id: str, task_buffer: str) -> bytes: ...
def pack_result(
    task_id: str,
    data: str,
    *,
    error_code: str | None = None,
    error_message: str | None = None,
    details: str | None = None,
    task_statuses: str | None = None,
) -> bytes:
    """``details`` (an object) and ``task_statuses`` (a list) are JSON text."""
def pack_status_report(endpoint_id: str, global_state: str, task_statuses: str = "{}") -> bytes:
    """``global_state`` and ``task_statuses`` (objects) are JSON text."""
def decode(body: bytes) -> Message:
    """Raises CodecError naming what is wrong."""
