"""The pure-Python transport (pika): the fallback without a compiled module, and the baseline
every benchmark compares the native transport against.

pika's ``BlockingConnection`` is not thread-safe, so a consumer is driven by the one thread that
calls ``next_batch``/``ack*``; ``close()`` alone may come from another thread.  A publisher
serialises its callers with a lock.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import pika
import pika.exceptions as pex
from pika.adapters.utils.connection_workflow import AMQPConnectorException

from volley.protocol.batches import BATCH_HEADER, InvalidBatch, decode_batch
from volley.protocol.messages import InvalidMessageError, decode
from volley.protocol.outcomes import ACK, NACK, RETURNED, PublishOutcome
from volley.transport.base import (
    ChannelClosedError,
    OutgoingMessage,
    PikaDelivery,
    PublishTimeoutError,
    TransportError,
)

# AMQPConnectorException: what BlockingConnection raises when the TCP, TLS or AMQP handshake
# times out (a port that takes the connection and never answers), not an AMQPConnectionError
_CONNECTION_ERRORS = (pex.AMQPConnectionError, pex.ConnectionClosed, pex.StreamLostError, OSError,
                      AMQPConnectorException)


def connection_parameters(
    url: str, *, ca_file: str | None = None, port: int | None = None, heartbeat: int | None = None
) -> pika.URLParameters:
    params = pika.URLParameters(url)
    if port is not None:
        params.port = port
    if url.startswith("amqps://"):
        ctx = ssl.create_default_context(cafile=ca_file)
        params.ssl_options = pika.SSLOptions(ctx, server_hostname=params.host)
    if heartbeat is not None:
        params.heartbeat = heartbeat
    params.connection_attempts = 1
    return params


def _wrap(exc: BaseException, what: str) -> TransportError:
    if isinstance(exc, pex.ChannelClosedByBroker):
        return ChannelClosedError(f"{what}: broker closed the channel: {exc.reply_code} {exc.reply_text}",
                                  exc.reply_code)
    if isinstance(exc, pex.ProbableAuthenticationError | pex.ProbableAccessDeniedError):
        return TransportError(f"{what}: the broker refused the credentials ({exc!r}); check the URL's user and password")
    return TransportError(f"{what}: {exc!r}; is the broker running and reachable?")


class _Settled:
    """The AMQP tags settled on one channel: every tag through ``through``, and ``singles``
    above it.  RabbitMQ closes the channel (406 "unknown delivery tag") when a tag is settled
    twice, which a multiple-ack through a tag nacked before would do; the native transport
    keeps the same books (rust/tags.rs)."""

    __slots__ = ("singles", "through")

    def __init__(self) -> None:
        self.through = 0
        self.singles: set[int] = set()

    def settle_through(self, tag: int) -> int | None:
        """Settle every tag through ``tag``; the tag a multiple-ack must name to do that (the
        highest one not settled before), or None if all were."""
        if tag <= self.through:
            return None
        send = tag
        while send > self.through and send in self.singles:
            send -= 1
        unsettled = send > self.through
        self.through = tag
        self.singles = {t for t in self.singles if t > tag}
        self._compact()
        return send if unsettled else None

    def settle_one(self, tag: int) -> bool:
        """Settle ``tag``; whether it was still unsettled."""
        if tag <= self.through or tag in self.singles:
            return False
        self.singles.add(tag)
        self._compact()
        return True

    def _compact(self) -> None:
        while self.through + 1 in self.singles:
            self.singles.remove(self.through + 1)
            self.through += 1


class PikaConsumer:
    def __init__(
        self,
        url: str,
        queue: str,
        *,
        ca_file: str | None = None,
        port: int | None = None,
        prefetch: int = 1000,
        exclusive: bool = False,
        decode: bool = True,
        channel_prefetch: int | None = None,
    ) -> None:
        self._params = connection_parameters(url, ca_file=ca_file, port=port)
        self._queue = queue
        self._prefetch = prefetch
        self._exclusive = exclusive
        self._decode = decode
        self._channel_prefetch = channel_prefetch
        self._buffer: deque[PikaDelivery] = deque()
        self._floor = 0  # tags at or below belong to connections that are gone
        self._last_tag = 0
        self._settled = _Settled()  # of the current connection's channel
        self._closing = False
        self._closed = False
        self._busy = threading.Lock()  # held while a thread drives the connection
        self._conn: pika.BlockingConnection | None = None
        self._channel: Any = None
        try:
            self._connect()
        except (*_CONNECTION_ERRORS, pex.AMQPChannelError) as exc:
            raise _wrap(exc, f"cannot consume from {queue!r}") from exc

    def _connect(self) -> None:
        conn = pika.BlockingConnection(self._params)
        try:
            channel = conn.channel()
            channel.basic_qos(prefetch_count=self._prefetch)
            if self._channel_prefetch is not None:
                channel.basic_qos(prefetch_count=self._channel_prefetch, global_qos=True)
            self._floor = self._last_tag
            self._settled = _Settled()
            channel.basic_consume(
                self._queue, self._on_message, auto_ack=False, exclusive=self._exclusive
            )
        except BaseException:
            if conn.is_open:
                conn.close()
            raise
        self._conn, self._channel = conn, channel

    def _on_message(self, _ch: Any, method: Any, props: Any, body: bytes) -> None:
        tag = self._floor + method.delivery_tag
        self._last_tag = tag
        message = invalid = batch = None
        headers = dict(props.headers or {})
        if self._decode:
            # Any failure to decode makes an invalid delivery the caller dead-letters: an
            # exception escaping this callback would break the consumer, and the message
            # would come back first after every reconnect.
            try:
                if BATCH_HEADER in headers:
                    batch = decode_batch(body, headers[BATCH_HEADER], decode)
                else:
                    message = decode(body)
            except InvalidBatch as exc:
                invalid = f"not a valid result batch: {exc}"
            except InvalidMessageError as exc:
                invalid = str(exc)
            except Exception as exc:
                invalid = f"could not decode the body: {type(exc).__name__}: {str(exc)[:200]}"
        self._buffer.append(
            PikaDelivery(
                tag=tag,
                redelivered=bool(method.redelivered),
                exchange=method.exchange,
                routing_key=method.routing_key,
                timestamp=props.timestamp,
                headers=headers,
                body=body,
                message=message,
                invalid=invalid,
                batch=batch,
                user_id=props.user_id,
            )
        )

    def _lost(self, cause: BaseException) -> None:
        """Report a lost connection (the caller's one reconnect policy opens a new consumer);
        unacked deliveries of the lost connection come back redelivered."""
        self._buffer.clear()
        self._drop_connection()
        self._closed = True
        raise _wrap(cause, f"lost the connection consuming {self._queue!r}") from cause

    def _drop_connection(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except Exception:  # already broken; nothing more to release
                pass

    def next_batch(self, max_messages: int = 1024, timeout: float | None = None) -> list[PikaDelivery]:
        with self._busy:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._buffer and not self._closing:
                remaining = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
                if remaining <= 0:
                    break
                try:
                    assert self._conn is not None
                    self._conn.process_data_events(time_limit=remaining)
                except (*_CONNECTION_ERRORS, pex.AMQPChannelError, AssertionError) as exc:
                    self._lost(exc)
                except ValueError as exc:
                    # pika's I/O loop raises this ("Timeout closed before call") when a broker
                    # went away while a wait was being set up: a lost connection like the others
                    if self._conn is not None and self._conn.is_open:
                        raise
                    self._lost(exc)
            if self._closing:
                self._finish_close()
                return []
            n = min(max_messages, len(self._buffer))
            return [self._buffer.popleft() for _ in range(n)]

    def _settle(self, tag: int, op: Any, *, multiple: bool) -> None:
        """Run ``op(channel, amqp_tag)`` holding ``_busy``, like next_batch: a close() from
        another thread must not tear the connection down under an ack (pika is not
        thread-safe; that races end in SSL errors).  A close() that came meanwhile is finished
        here, by the thread that owns the connection.  Nothing is sent for tags settled
        already."""
        with self._busy:
            if tag > self._floor and self._channel is not None and not self._closed:
                own = tag - self._floor
                send = self._settled.settle_through(own) if multiple else (
                    own if self._settled.settle_one(own) else None)
                try:
                    if send is not None:
                        op(self._channel, send)
                except (*_CONNECTION_ERRORS, pex.AMQPChannelError):
                    pass  # that connection is gone: the broker redelivers after reconnect
            # else: the delivery's connection is gone; the broker will redeliver it
            if self._closing:
                self._finish_close()

    def set_prefetch(self, count: int) -> None:
        """As the native Consumer's: a channel-wide ``basic.qos`` on the running consumer."""
        if not 0 <= count <= 65535:
            raise ValueError(f"prefetch must be between 0 and 65535 (0 means unlimited), got {count}")
        with self._busy:
            self._channel_prefetch = count
            if self._channel is not None and not self._closed:
                try:
                    self._channel.basic_qos(prefetch_count=count, global_qos=True)
                except (*_CONNECTION_ERRORS, pex.AMQPChannelError):
                    pass  # that connection is gone: the next one applies it
            if self._closing:
                self._finish_close()

    def ack_through(self, tag: int) -> None:
        self._settle(tag, lambda ch, t: ch.basic_ack(t, multiple=True), multiple=True)

    def ack(self, tag: int) -> None:
        self._settle(tag, lambda ch, t: ch.basic_ack(t, multiple=False), multiple=False)

    def nack(self, tag: int, *, requeue: bool) -> None:
        self._settle(tag, lambda ch, t: ch.basic_nack(t, multiple=False, requeue=requeue), multiple=False)

    def close(self) -> None:
        if self._closed:
            return
        self._closing = True
        if self._busy.acquire(blocking=False):
            try:
                self._finish_close()
            finally:
                self._busy.release()
        elif self._conn is not None:
            # a thread is in next_batch or settling: wake it; it closes the connection itself
            try:
                self._conn.add_callback_threadsafe(lambda: None)
            except Exception:
                pass

    def _finish_close(self) -> None:
        if not self._closed:
            self._closed = True
            self._buffer.clear()
            self._drop_connection()

    @property
    def closed(self) -> bool:
        return self._closed or self._closing


class PikaPublisher:
    def __init__(
        self,
        url: str,
        *,
        ca_file: str | None = None,
        port: int | None = None,
        confirms: bool = True,
    ) -> None:
        # no AMQP heartbeats: a blocking publisher only runs its I/O loop while publishing, and an
        # idle one would otherwise be dropped by the broker; a dead socket is found on next use
        self._params = connection_parameters(url, ca_file=ca_file, port=port, heartbeat=0)
        self._confirms = confirms
        self._lock = threading.RLock()
        self._conn: pika.BlockingConnection | None = None
        self._channel: Any = None
        self._closed = False
        try:
            self._connect()
        except _CONNECTION_ERRORS as exc:
            raise _wrap(exc, "cannot open a publisher") from exc

    def _connect(self) -> None:
        conn = pika.BlockingConnection(self._params)
        channel = conn.channel()
        if self._confirms:
            channel.confirm_delivery()
        self._conn, self._channel = conn, channel

    def _with_channel(self, what: str, op: Any) -> Any:
        """Run ``op(channel)``, replacing a lost connection once and at once, like the native
        publisher: a connection that died while idle (a broker restart) is replaced on next use;
        a broker that is still down is reported to the caller, whose one reconnect policy
        decides when to try again."""
        with self._lock:
            if self._closed:
                raise TransportError(f"{what}: publisher is closed")
            last: BaseException | None = None
            for _attempt in range(2):
                try:
                    if self._channel is None or not self._channel.is_open:
                        self._reset()
                        self._connect()
                    return op(self._channel)
                except pex.ChannelClosedByBroker as exc:
                    self._channel = None
                    raise _wrap(exc, what) from exc
                except (*_CONNECTION_ERRORS, pex.ChannelWrongStateError) as exc:
                    last = exc
                    self._channel = None
            raise _wrap(last or RuntimeError("unknown"), what)

    def _reset(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except Exception:
                pass

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
        props = pika.BasicProperties(
            delivery_mode=2 if persistent else 1,
            headers=headers,
            timestamp=timestamp,
            content_type=content_type,
            user_id=user_id,
        )

        def op(ch: Any) -> PublishOutcome:
            try:
                ch.basic_publish(exchange, routing_key, body, properties=props, mandatory=mandatory)
            except pex.UnroutableError:
                return RETURNED
            except pex.NackError:
                return NACK
            return ACK

        return self._with_channel(f"publish to {exchange!r}/{routing_key!r}", op)

    def publish_batch(
        self,
        messages: Sequence[OutgoingMessage],
        *,
        persistent: bool = True,
        mandatory: bool = False,
        timeout: float | None = 30.0,
        user_id: str | None = None,
    ) -> list[PublishOutcome]:
        deadline = None if timeout is None else time.monotonic() + timeout
        out: list[PublishOutcome] = []
        for exchange, routing_key, body, headers, timestamp in messages:
            if deadline is not None and time.monotonic() > deadline:
                raise PublishTimeoutError(f"confirms for {len(messages)} messages took over {timeout}s")
            out.append(
                self.publish(
                    exchange, routing_key, body, headers=headers, timestamp=timestamp,
                    persistent=persistent, mandatory=mandatory, user_id=user_id,
                )
            )
        return out

    def declare_exchange(self, name: str, kind: str, *, durable: bool = True, passive: bool = False) -> None:
        self._with_channel(
            f"declare exchange {name!r}",
            lambda ch: ch.exchange_declare(name, kind, durable=durable, passive=passive),
        )

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
        ok = self._with_channel(
            f"declare queue {name!r}",
            lambda ch: ch.queue_declare(
                name, durable=durable, passive=passive, exclusive=exclusive,
                auto_delete=auto_delete, arguments=arguments,
            ),
        )
        return int(ok.method.message_count)

    def bind_queue(self, queue: str, exchange: str, routing_key: str) -> None:
        self._with_channel(
            f"bind {queue!r} to {exchange!r}",
            lambda ch: ch.queue_bind(queue, exchange, routing_key=routing_key),
        )

    def delete_queue(self, name: str) -> None:
        self._with_channel(f"delete queue {name!r}", lambda ch: ch.queue_delete(name))

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._reset()

    @property
    def closed(self) -> bool:
        return self._closed
