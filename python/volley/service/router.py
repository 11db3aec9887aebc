"""Background consumers of the service: the result router and the heartbeat listener.

The router stores each result before acking its message, forwards it to the owner's
per-task-group queue with the completion time as AMQP ``timestamp``, and ignores duplicates (a
task that is already complete is left as it is and nothing is forwarded).  Anything that is not
a valid ``Result`` for a known task of the publishing endpoint is dead-lettered with a log line,
never requeued.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from volley.protocol import topology as topo
from volley.service.db import TERMINAL_STATES, Endpoint, Task, TaskGroup
from volley.service.gateway import BrokerGateway
from volley.transport import Consumer, open_consumer

log = logging.getLogger(__name__)


def _endpoint_of(routing_key: str, suffix: str) -> str | None:
    head, dot, tail = routing_key.rpartition(".")
    return head if dot and tail == suffix else None


class ConsumerLoop(threading.Thread):
    """Consume one queue in batches, reconnecting with back-off until stopped."""

    queue: str = ""

    def __init__(self, gateway: BrokerGateway, sessions: sessionmaker) -> None:
        super().__init__(name=f"volley-{self.queue}", daemon=True)
        self.gateway = gateway
        self.sessions = sessions
        self._stop = threading.Event()
        self._consumer: Consumer | None = None
        self.ready = threading.Event()

    def stop(self) -> None:
        self._stop.set()
        if self._consumer is not None:
            self._consumer.close()

    def run(self) -> None:
        delay = 0.2
        while not self._stop.is_set():
            try:
                self._consumer = open_consumer(
                    self.gateway.url, self.queue, transport=self.gateway.transport,
                    ca_file=self.gateway.ca_file, prefetch=2000,
                )
            except ConnectionError as exc:
                log.warning("cannot consume %r (%s); retrying in %.1fs", self.queue, exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)
                continue
            delay = 0.2
            self.ready.set()
            try:
                while not self._stop.is_set():
                    batch = self._consumer.next_batch(1000, timeout=1.0)
                    if batch:
                        self.handle(self._consumer, batch)
            except ConnectionError as exc:
                log.warning("lost the %r consumer (%s); reconnecting", self.queue, exc)
            except Exception:
                log.exception("unexpected error handling %r; reconnecting (unacked messages return)", self.queue)
            finally:
                self._consumer.close()

    def handle(self, consumer: Consumer, batch: Sequence[Any]) -> None:
        raise NotImplementedError


class ResultRouter(ConsumerLoop):
    queue = topo.RESULTS_QUEUE

    def handle(self, consumer: Consumer, batch: Sequence[Any]) -> None:
        results = []
        for d in batch:
            m = d.message
            if m is None or m.kind != "result":
                self._dead_letter(consumer, d, d.invalid or f"a {m.kind!r} message is not a result")
            else:
                results.append(d)
        if not results:
            return
        now = time.time()
        forwards: list[tuple[str, bytes, int]] = []
        with self.sessions() as s:
            ids = [d.message.task_id for d in results]
            tasks = {t.id: t for t in s.scalars(select(Task).where(Task.id.in_(ids)))}
            groups = {
                g.id: g
                for g in s.scalars(
                    select(TaskGroup).where(TaskGroup.id.in_({t.task_group_id for t in tasks.values()}))
                )
            }
            for d in results:
                m = d.message
                task = tasks.get(m.task_id)
                sender = _endpoint_of(d.routing_key, "results")
                if task is None or sender != task.endpoint_id:
                    why = "unknown task id" if task is None else f"task belongs to endpoint {task.endpoint_id}"
                    self._dead_letter(consumer, d, f"result for {m.task_id} from {sender}: {why}")
                    continue
                if task.status in TERMINAL_STATES:
                    continue  # a duplicate: stored already, forwarded already
                if m.is_error:
                    task.status, task.exception = "failed", m.data
                else:
                    task.status, task.result = "success", m.data
                details = m.details_dict() or {}
                if m.is_error:
                    details["error_code"] = m.error_code
                    details["error_message"] = m.error_message
                task.details = details
                task.completion_t = now
                group = groups.get(task.task_group_id)
                if group is not None and group.has_queue:
                    forwards.append((topo.sdk_queue_prefix(task.owner_id) + group.id, d.body, int(now)))
            s.commit()
        if forwards:
            outcomes = self.gateway.forward_results(forwards)
            lost = sum(o != "ack" for o in outcomes)
            if lost:
                # stored already: the SDK recovers these through /v2/batch_status
                log.warning("%d of %d results were not confirmed by the SDK queues", lost, len(forwards))
        consumer.ack_through(max(d.tag for d in results))

    @staticmethod
    def _dead_letter(consumer: Consumer, delivery: Any, why: str) -> None:
        log.warning("dead-lettering message from %r: %s", delivery.routing_key, why)
        consumer.nack(delivery.tag, requeue=False)


class HeartbeatListener(ConsumerLoop):
    queue = topo.HEARTBEATS_QUEUE

    def handle(self, consumer: Consumer, batch: Sequence[Any]) -> None:
        latest: dict[str, Any] = {}
        for d in batch:
            m = d.message
            sender = _endpoint_of(d.routing_key, "heartbeats")
            if m is None or m.kind != "ep_status_report" or m.endpoint_id != sender:
                why = d.invalid or f"not a status report of endpoint {sender}"
                log.warning("dead-lettering message from %r: %s", d.routing_key, why)
                consumer.nack(d.tag, requeue=False)
                continue
            latest[m.endpoint_id] = m
        if latest:
            now = time.time()
            with self.sessions() as s:
                for ep in s.scalars(select(Endpoint).where(Endpoint.id.in_(list(latest)))):
                    state = latest[ep.id].details_dict() or {}
                    ep.last_heartbeat = now
                    ep.heartbeat_period = float(state.get("heartbeat_period") or 30.0)
                    ep.active = bool(state.get("active", True)) and ep.heartbeat_period > 0
                    ep.status_report = state
                s.commit()
        consumer.ack_through(batch[-1].tag)
