"""Background consumers of the service: the result router and the heartbeat listener.

The router stores each result before acking its message, then forwards it to the owner's
per-task-group queue with the completion time as AMQP ``timestamp``.  Ingestion is idempotent:
a result for a task that is already complete changes nothing (it is only forwarded again if the
first forward was never confirmed, and then from what is stored).  Anything that is not a valid
``Result`` for a known task of the publishing endpoint is dead-lettered with a log line, never
requeued; so is a result the database refuses to store.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from volley.protocol import topology as topo
from volley.protocol.messages import pack_result
from volley.service.gateway import BrokerGateway
from volley.service.models import TERMINAL_STATES, Endpoint, Task, TaskGroup
from volley.transport import Consumer, Publisher, open_consumer

log = logging.getLogger(__name__)


def _endpoint_of(routing_key: str, suffix: str) -> str | None:
    head, dot, tail = routing_key.rpartition(".")
    return head if dot and tail == suffix else None


def _is_data_error(exc: DBAPIError) -> bool:
    """True when the database refused the data itself (it will refuse it again), as opposed to
    being unreachable or busy (worth retrying)."""
    from sqlalchemy.exc import DataError, IntegrityError, ProgrammingError

    return isinstance(exc, DataError | IntegrityError | ProgrammingError)


def dead_letter(consumer: Consumer, delivery: Any, why: str) -> None:
    log.warning("dead-lettering message from %r: %s", delivery.routing_key, why)
    consumer.nack(delivery.tag, requeue=False)


class ConsumerLoop(threading.Thread):
    """Consume one queue in batches, reconnecting with back-off until stopped."""

    queue: str = ""

    def __init__(self, gateway: BrokerGateway, sessions: sessionmaker[Session]) -> None:
        super().__init__(name=f"volley-{self.queue}", daemon=True)
        self.gateway = gateway
        self.sessions = sessions
        self._stop_event = threading.Event()
        self._consumer: Consumer | None = None
        self.ready = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        if self._consumer is not None:
            self._consumer.close()

    def run(self) -> None:
        failures = 0
        while not self._stop_event.is_set():
            if failures:
                # broker or database trouble: do not spin; unacked messages wait in the queue
                self._stop_event.wait(min(10.0, 0.2 * 2 ** min(failures, 6)))
                if self._stop_event.is_set():
                    return
            try:
                self._consumer = open_consumer(
                    self.gateway.url, self.queue, transport=self.gateway.transport,
                    ca_file=self.gateway.ca_file, prefetch=2000,
                )
            except ConnectionError as exc:
                failures += 1
                log.warning("cannot consume %r (%s); retrying", self.queue, exc)
                continue
            self.ready.set()
            try:
                while not self._stop_event.is_set():
                    batch = self._consumer.next_batch(1000, timeout=1.0)
                    if batch:
                        self.handle(self._consumer, batch)
                        failures = 0
            except ConnectionError as exc:
                failures += 1
                if not self._stop_event.is_set():
                    log.warning("lost the %r consumer (%s); reconnecting", self.queue, exc)
            except Exception:
                failures += 1
                log.exception("error handling %r; reconnecting (its unacked messages return)", self.queue)
            finally:
                self._consumer.close()

    def handle(self, consumer: Consumer, batch: Sequence[Any]) -> None:
        raise NotImplementedError


@dataclass
class _Stored:
    """What storing a batch of results decided: forwards to send, messages to dead-letter."""

    forwards: list[tuple[Any, str, str, bytes, int]] = field(default_factory=list)  # delivery, task, queue, body, ts
    rejected: list[tuple[Any, str]] = field(default_factory=list)
    done: list[Any] = field(default_factory=list)  # stored or duplicate; nothing to forward

    def merge(self, other: _Stored) -> None:
        self.forwards += other.forwards
        self.rejected += other.rejected
        self.done += other.done


def _error_text(task: Task) -> tuple[str | None, str | None]:
    details = task.details or {}
    return details.get("error_code"), details.get("error_message")


class ResultRouter(ConsumerLoop):
    queue = topo.RESULTS_QUEUE

    def __init__(self, gateway: BrokerGateway, sessions: sessionmaker[Session]) -> None:
        super().__init__(gateway, sessions)
        self._publisher: Publisher | None = None

    def _forwarder(self) -> Publisher:
        if self._publisher is None or self._publisher.closed:
            self._publisher = self.gateway.open_publisher()
        return self._publisher

    def run(self) -> None:
        try:
            super().run()
        finally:
            if self._publisher is not None:
                self._publisher.close()

    def handle(self, consumer: Consumer, batch: Sequence[Any]) -> None:
        results = []
        for d in batch:
            m = d.message
            if m is None or m.kind != "result":
                dead_letter(consumer, d, d.invalid or f"a {m.kind!r} message is not a result")
            else:
                results.append(d)
        if not results:
            return
        try:
            outcome = self._store(results)
        except DBAPIError as exc:
            if not _is_data_error(exc):
                raise
            # one result poisons the batch: store them one by one to find it
            outcome = _Stored()
            for d in results:
                try:
                    outcome.merge(self._store([d]))
                except DBAPIError as one_exc:
                    if not _is_data_error(one_exc):
                        raise
                    outcome.rejected.append((d, f"the database refused it: {one_exc.orig}"))
        for d, why in outcome.rejected:
            dead_letter(consumer, d, why)
        unconfirmed = self._forward(outcome.forwards)
        for d in unconfirmed:
            # stored, but not delivered to the SDK: a redelivery forwards it from the database
            consumer.nack(d.tag, requeue=True)
        if unconfirmed:
            settled = {id(d) for d in unconfirmed} | {id(d) for d, _ in outcome.rejected}
            for d in results:
                if id(d) not in settled:
                    consumer.ack(d.tag)
        else:
            consumer.ack_through(max(d.tag for d in results))

    def _store(self, results: Sequence[Any]) -> _Stored:
        out = _Stored()
        now = time.time()
        with self.sessions() as s:
            ids = list({d.message.task_id for d in results})
            # FOR UPDATE (PostgreSQL): of two service processes given the same result, the
            # second waits and then sees the task complete; locking in id order avoids deadlocks
            tasks = {
                t.id: t
                for t in s.scalars(select(Task).where(Task.id.in_(ids)).order_by(Task.id).with_for_update())
            }
            group_ids = {t.task_group_id for t in tasks.values()}
            queued = set(
                s.scalars(select(TaskGroup.id).where(TaskGroup.id.in_(group_ids), TaskGroup.has_queue))
            )
            seen: set[str] = set()
            for d in results:
                m = d.message
                task = tasks.get(m.task_id)
                sender = _endpoint_of(d.routing_key, "results")
                if task is None or sender != task.endpoint_id:
                    why = "unknown task id" if task is None else f"task belongs to endpoint {task.endpoint_id}"
                    out.rejected.append((d, f"result for {m.task_id} from {sender}: {why}"))
                    continue
                queue = topo.sdk_queue_prefix(task.owner_id) + task.task_group_id
                if m.task_id in seen or task.status in TERMINAL_STATES:
                    if m.task_id not in seen and not task.forwarded and task.task_group_id in queued:
                        out.forwards.append((d, task.id, queue, self._packed(task), int(task.completion_t or now)))
                    else:
                        out.done.append(d)  # a duplicate: stored already, forwarded already
                    seen.add(m.task_id)
                    continue
                seen.add(m.task_id)
                body = d.body
                details = m.details_dict() or {}
                if len(m.data) > topo.MAX_PAYLOAD_SIZE:
                    # the endpoint should have refused it; the service enforces the limit too
                    text = (
                        f"MaxResultSizeExceeded: the task's result of {len(m.data)} characters "
                        f"exceeds the {topo.MAX_PAYLOAD_SIZE} character (10 MiB) limit"
                    )
                    details.update(error_code="MaxResultSizeExceeded", error_message=text)
                    task.status, task.exception = "failed", text
                    body = pack_result(task.id, text, error_code="MaxResultSizeExceeded",
                                       error_message=text, details=m.details_dict())
                elif m.is_error:
                    details.update(error_code=m.error_code, error_message=m.error_message)
                    task.status, task.exception = "failed", m.data
                else:
                    task.status, task.result = "success", m.data
                task.details = details
                task.completion_t = now
                task.updated_at = now
                if task.task_group_id in queued:
                    out.forwards.append((d, task.id, queue, body, int(now)))
                else:
                    task.forwarded = True  # nobody streams this group; REST serves the result
                    out.done.append(d)
            s.commit()
        return out

    @staticmethod
    def _packed(task: Task) -> bytes:
        """A stored result packed again, for a forward that must be repeated."""
        code, message = _error_text(task)
        if task.status == "failed":
            return pack_result(task.id, task.exception or "", error_code=code or "UNKNOWN_TASK_FAILURE",
                               error_message=message or "", details=task.details)
        return pack_result(task.id, task.result or "", details=task.details)

    def _forward(self, forwards: list[tuple[Any, str, str, bytes, int]]) -> list[Any]:
        """Send to the SDK queues; mark what the broker confirmed; return the deliveries whose
        forward was not confirmed."""
        if not forwards:
            return []
        batch = [("", queue, body, None, ts) for _d, _t, queue, body, ts in forwards]
        try:
            outcomes = self._forwarder().publish_batch(batch)
        except (ConnectionError, TimeoutError) as exc:
            log.warning("could not forward %d results (%s); they will be forwarded on redelivery", len(batch), exc)
            outcomes = ["error"] * len(batch)
        confirmed = [t for (_d, t, *_), o in zip(forwards, outcomes, strict=True) if o == "ack"]
        with self.sessions() as s:
            for i in range(0, len(confirmed), 500):
                s.execute(update(Task).where(Task.id.in_(confirmed[i : i + 500])).values(forwarded=True))
            s.commit()
        # an unroutable forward (its queue expired or was never made) is still "ack": the
        # default exchange drops it and the SDK can fetch the result over REST
        return [d for (d, *_), o in zip(forwards, outcomes, strict=True) if o != "ack"]


class HeartbeatListener(ConsumerLoop):
    queue = topo.HEARTBEATS_QUEUE

    def handle(self, consumer: Consumer, batch: Sequence[Any]) -> None:
        latest: dict[str, Any] = {}
        for d in batch:
            m = d.message
            sender = _endpoint_of(d.routing_key, "heartbeats")
            if m is None or m.kind != "ep_status_report" or m.endpoint_id != sender:
                dead_letter(consumer, d, d.invalid or f"not a status report of endpoint {sender}")
                continue
            latest[m.endpoint_id] = m
        if latest:
            try:
                self._record(latest)
            except DBAPIError as exc:
                if not _is_data_error(exc):
                    raise
                # a status report is superseded by the next one: drop it rather than retry
                log.warning("dropping %d status reports the database refused: %s", len(latest), exc.orig)
        consumer.ack_through(batch[-1].tag)

    def _record(self, latest: dict[str, Any]) -> None:
        now = time.time()
        with self.sessions() as s:
            for ep in s.scalars(select(Endpoint).where(Endpoint.id.in_(list(latest)))):
                state = latest[ep.id].details_dict() or {}
                try:
                    period = float(state.get("heartbeat_period") or 30.0)
                except (TypeError, ValueError):
                    period = 30.0
                ep.last_heartbeat = now
                ep.heartbeat_period = period
                # upstream: a final report says active=false (UEP) or period 0 (manager)
                ep.active = bool(state.get("active", True)) and period > 0
                ep.status_report = state
            s.commit()
