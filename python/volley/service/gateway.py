"""The service's side of the broker: topology (docs/protocol.md), task
publishing with batched publisher confirms, and the per-task-group SDK queues."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any

from volley.protocol import topology as topo
from volley.protocol.headers import submission_headers, task_headers
from volley.protocol.outcomes import ACK, NACK, RETURNED
from volley.service.settings import ServiceSettings
from volley.transport import Publisher, open_publisher
from volley.transport.base import NOT_FOUND, PRECONDITION_FAILED, channel_code

log = logging.getLogger(__name__)

_DEAD_LETTER = {"x-dead-letter-exchange": topo.DEAD_LETTER_EXCHANGE}


@dataclass(frozen=True)
class QueueLimits:
    """The queue bounds of :class:`~volley.service.settings.ServiceSettings` (same names)."""

    results_queue_max_length: int = ServiceSettings.results_queue_max_length
    results_queue_max_bytes: int = ServiceSettings.results_queue_max_bytes
    heartbeats_queue_max_length: int = ServiceSettings.heartbeats_queue_max_length
    heartbeats_queue_max_bytes: int = ServiceSettings.heartbeats_queue_max_bytes
    task_queue_max_length: int = ServiceSettings.task_queue_max_length
    task_queue_max_bytes: int = ServiceSettings.task_queue_max_bytes
    sdk_queue_max_length: int = ServiceSettings.sdk_queue_max_length
    sdk_queue_max_bytes: int = ServiceSettings.sdk_queue_max_bytes
    dead_letter_max_length: int = ServiceSettings.dead_letter_max_length
    dead_letter_max_bytes: int = ServiceSettings.dead_letter_max_bytes

    @classmethod
    def of(cls, settings: ServiceSettings) -> QueueLimits:
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})

    def arguments(self, kind: str, overflow: str = "reject-publish") -> dict[str, Any]:
        """``x-max-length``/``x-max-length-bytes``/``x-overflow`` of queue ``kind`` (the
        settings' prefix: ``results_queue``, ``task_queue``, ``dead_letter``, ...)."""
        out: dict[str, Any] = {}
        length, size = getattr(self, f"{kind}_max_length"), getattr(self, f"{kind}_max_bytes")
        if length > 0:
            out["x-max-length"] = length
        if size > 0:
            out["x-max-length-bytes"] = size
        if out:
            out["x-overflow"] = overflow
        return out


def is_not_found(exc: BaseException) -> bool:
    """A channel the broker closed with 404 NOT_FOUND (either transport)."""
    return channel_code(exc) == NOT_FOUND


class BrokerGateway:
    def __init__(self, url: str, *, ca_file: str | None, transport: str | None, sdk_queue_ttl_s: float,
                 limits: QueueLimits | None = None) -> None:
        self.url = url
        self.limits = limits or QueueLimits()
        self.ca_file = ca_file
        self.transport = transport
        # unused SDK queues vanish with the task records they would carry (the TTL)
        self.sdk_queue_expires_ms = max(1000, int(sdk_queue_ttl_s * 1000))
        # queue name -> when we last declared it: an Executor asks for its queue with every
        # batch, and a declare is a broker round trip (~0.35 ms) on each submission's path
        self._declared: dict[str, float] = {}
        self._declared_lock = threading.Lock()
        self._redeclare_after_s = min(30.0, self.sdk_queue_expires_ms / 4000)
        self.publisher: Publisher = open_publisher(url, transport=transport, ca_file=ca_file)
        # called with an endpoint id when its task queue turned out to be missing, so the
        # tasks published into it earlier (lost with it) go back to the outbox
        self.on_queue_lost: Callable[[str], None] | None = None
        # submissions whose publish is under way in this process: the outbox leaves them alone
        # however long a large batch takes, rather than publish it a second time
        self._publishing: set[str] = set()
        self._publishing_lock = threading.Lock()

    def open_publisher(self) -> Publisher:
        """Another confirming publisher on the same broker (the router's own, so forwarding
        never queues behind submissions)."""
        return open_publisher(self.url, transport=self.transport, ca_file=self.ca_file)

    def declare_topology(self) -> None:
        p = self.publisher
        p.declare_exchange(topo.DEAD_LETTER_EXCHANGE, "fanout")
        # bounded: a misbehaving endpoint must not be able to fill the broker with garbage;
        # beyond the bound the oldest poison messages go (each was logged when it arrived)
        self._declare_or_keep(topo.DEAD_LETTER_QUEUE, self.limits.arguments("dead_letter", "drop-head"))
        p.bind_queue(topo.DEAD_LETTER_QUEUE, topo.DEAD_LETTER_EXCHANGE, "")
        p.declare_exchange(topo.TASKS_EXCHANGE, "direct")
        # full: an endpoint's publish is refused (nack) and it retries; nothing is dropped
        for exchange, queue, kind in (
            (topo.RESULTS_EXCHANGE, topo.RESULTS_QUEUE, "results_queue"),
            (topo.HEARTBEATS_EXCHANGE, topo.HEARTBEATS_QUEUE, "heartbeats_queue"),
        ):
            p.declare_exchange(exchange, "topic")
            self._declare_or_keep(queue, {**_DEAD_LETTER, **self.limits.arguments(kind)})
            p.bind_queue(queue, exchange, f"*.{queue}")

    def declare_endpoint_queue(self, endpoint_id: str) -> None:
        """Declare an endpoint's task queue: full, it refuses publishes (the tasks stay in the
        outbox until the endpoint takes some)."""
        queue = topo.task_queue(endpoint_id)
        self._declare_or_keep(queue, {**_DEAD_LETTER, **self.limits.arguments("task_queue")})
        self.publisher.bind_queue(queue, topo.TASKS_EXCHANGE, queue)
        # cancel notices, on the default exchange; few and small, so bounded like the dead letters
        self._declare_or_keep(topo.control_queue(endpoint_id),
                              {**_DEAD_LETTER, **self.limits.arguments("dead_letter", "drop-head")})

    def send_control(self, endpoint_id: str, body: bytes) -> bool:
        """Put a control notice in the endpoint's control queue (declared again if missing);
        False when the broker refused it."""
        queue = topo.control_queue(endpoint_id)
        outcome = self.publisher.publish("", queue, body, mandatory=True)
        if outcome == RETURNED:
            self.declare_endpoint_queue(endpoint_id)
            outcome = self.publisher.publish("", queue, body, mandatory=True)
        return outcome == ACK

    def delete_endpoint_queue(self, endpoint_id: str) -> None:
        self.publisher.delete_queue(topo.task_queue(endpoint_id))
        self.publisher.delete_queue(topo.control_queue(endpoint_id))

    def declare_sdk_queue(self, name: str, *, unless_recent: bool = False) -> None:
        """Declare (or touch) a task group's result queue.  Declaring again restarts its expiry.
        With ``unless_recent``, skip it if this process declared the queue moments ago (well
        within its expiry, so it still exists unless deleted by hand)."""
        now = time.monotonic()
        if unless_recent:
            with self._declared_lock:
                last = self._declared.get(name)
            if last is not None and now - last < self._redeclare_after_s:
                return
        # full, its oldest result goes to the dead-letter queue rather than refuse the router's
        # forward: a refusal would send the result back to the head of `results` and hold up
        # every tenant's results; the result is stored and the SDK fetches it over REST
        self._declare_or_keep(name, {"x-expires": self.sdk_queue_expires_ms, **_DEAD_LETTER,
                                     **self.limits.arguments("sdk_queue", "drop-head")})
        with self._declared_lock:
            if len(self._declared) > 100_000:  # bounded: forget everything rather than grow
                self._declared.clear()
            self._declared[name] = now

    def _declare_or_keep(self, name: str, arguments: dict[str, Any]) -> None:
        """Declare ``name``; if it exists with other arguments (declared under other settings or
        by an older version: PRECONDITION_FAILED), keep it as it is -- it exists, which is what
        callers need -- rather than fail."""
        try:
            self.publisher.declare_queue(name, arguments=arguments)
        except ConnectionError as exc:  # both transports' "channel closed" errors are these
            if channel_code(exc) != PRECONDITION_FAILED:
                raise
            log.warning("queue %r exists with other arguments than %s; keeping it as it is (a "
                        "RabbitMQ policy can bound it)", name, arguments)
            self.publisher.declare_queue(name, passive=True)

    def publish_tasks(
        self,
        endpoint_id: str,
        tasks: Sequence[tuple[str, str, bytes]],
        *,
        resource_specification: dict[str, Any] | None,
        result_serializers: list[str] | None,
        max_retries_on_system_failure: int | None = None,
    ) -> set[str]:
        """Publish ``(task_id, function_id, packed_task)`` triples; return the ids the broker
        confirmed.  Raises ``ConnectionError`` / ``TimeoutError`` when the broker cannot be
        reached or does not answer in time: then some messages may have arrived, none is known
        to have."""
        common = submission_headers(resource_specification, result_serializers, max_retries_on_system_failure)
        rk = topo.task_queue(endpoint_id)
        batch = [(topo.TASKS_EXCHANGE, rk, body, task_headers(fid, tid, common), None) for tid, fid, body in tasks]
        outcomes = self.publisher.publish_batch(batch, mandatory=True)
        returned = [i for i, o in enumerate(outcomes) if o == RETURNED]
        if returned:
            # the endpoint's queue is gone (deleted by hand, or a broker that lost its state):
            # declare it again and send what came back, once
            log.warning("task queue of endpoint %s was missing; declared it again", endpoint_id)
            self.declare_endpoint_queue(endpoint_id)
            self._report_queue_lost(endpoint_id)
            again = self.publisher.publish_batch([batch[i] for i in returned], mandatory=True)
            for i, outcome in zip(returned, again, strict=True):
                outcomes[i] = outcome
        confirmed = {tid for (tid, _fid, _body), o in zip(tasks, outcomes, strict=True) if o == ACK}
        if len(confirmed) < len(tasks):
            refused = sorted({o for o in outcomes if o != ACK})
            log.warning(
                "the broker did not accept %d of %d task messages for endpoint %s (%s%s); "
                "they stay in the outbox", len(tasks) - len(confirmed), len(tasks), endpoint_id,
                ", ".join(refused), f": {self.task_queue_full(endpoint_id)}" if NACK in refused else "",
            )
        return confirmed

    def task_queue_full(self, endpoint_id: str) -> str:
        """What a refused (nacked) task publish means, for logs and answers."""
        lim = self.limits
        return (f"the task queue of endpoint {endpoint_id} is full (task_queue_max_length="
                f"{lim.task_queue_max_length}, task_queue_max_bytes={lim.task_queue_max_bytes})")

    @contextmanager
    def publishing(self, submission_id: str) -> Iterator[None]:
        """Mark a submission's publish (and the recording of its confirms) as under way."""
        with self._publishing_lock:
            self._publishing.add(submission_id)
        try:
            yield
        finally:
            with self._publishing_lock:
                self._publishing.discard(submission_id)

    def is_publishing(self, submission_id: str | None) -> bool:
        with self._publishing_lock:
            return submission_id in self._publishing

    def _report_queue_lost(self, endpoint_id: str) -> None:
        """Tell ``on_queue_lost`` that messages queued earlier for this endpoint are gone."""
        if self.on_queue_lost is None:
            return
        try:
            self.on_queue_lost(endpoint_id)
        except Exception:  # the restore that follows a reconnect catches what this misses
            log.exception("could not return the lost tasks of endpoint %s to the outbox", endpoint_id)

    def queue_exists(self, name: str) -> bool:
        """Whether the broker has queue ``name`` (a passive declare; 404 means no)."""
        try:
            self.publisher.declare_queue(name, passive=True)
        except ConnectionError as exc:
            if is_not_found(exc):
                return False
            raise
        return True

    def recent_sdk_queues(self) -> list[str]:
        """The SDK queues this process declared recently enough to skip declaring them again:
        after a broker lost its state these are the ones clients are most likely using."""
        horizon = time.monotonic() - self._redeclare_after_s
        with self._declared_lock:
            return [name for name, at in self._declared.items() if at >= horizon]

    def forget_declared(self) -> None:
        """Forget which SDK queues exist: the next submission or reload declares each again."""
        with self._declared_lock:
            self._declared.clear()

    def close(self) -> None:
        self.publisher.close()
