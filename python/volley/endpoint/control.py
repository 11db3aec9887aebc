"""The endpoint's control queue: cancel notices from the service (docs/endpoint.md, "Cancel").

A thread of its own consumes ``<endpoint_id>.control``.  Each notice's task ids go to the cancel
record (:mod:`volley.endpoint.cancels`: on disk, so a task still in the task queue is dropped
whenever it comes, also after a restart), then the notice goes to the task intake through a
queue (the intake applies it on its own thread between waits, so nothing is added to the path
of a task), and only then is it acked: an agent that dies before that gets it again.  When the
record cannot be written (a full disk) the notice applies all the same but stays unacked, and
the write is tried again every few seconds.

:attr:`ControlListener.caught_up` is set once the queue had nothing more to hand over: the agent
waits for it before it runs tasks, so notices sent while it was down apply to the first
deliveries too.  A service older than this endpoint declares no control queue: the listener
then logs once that tasks cannot be cancelled here and stops.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

from volley.endpoint.cancels import CancelRecord
from volley.protocol import topology as topo
from volley.protocol.control import CancelNotice, parse_control
from volley.transport import Consumer, Delivery, open_consumer
from volley.transport.base import NOT_FOUND, channel_code
from volley.transport.reconnect import ConsumeLoop, ReconnectPolicy

log = logging.getLogger(__name__)

# how often a record the disk refused is written again
RECORD_RETRY_S = 2.0


class _NoControlQueue(RuntimeError):
    pass


class ControlListener:
    def __init__(self, name: str, endpoint_id: str, url: str, *, amqp: dict[str, Any],
                 policy: ReconnectPolicy, stopped: threading.Event,
                 notices: queue.SimpleQueue[CancelNotice], record: CancelRecord) -> None:
        self.url, self.queue, self.amqp = url, topo.control_queue(endpoint_id), amqp
        self.notices, self.record = notices, record
        self.caught_up = threading.Event()
        self._handled = False  # a batch came since the last wait
        # notices applied whose ids the disk refused: (tag, task ids), acked once written
        self._unrecorded: list[tuple[int, list[str]]] = []
        self._next_try = 0.0
        self._failing = False
        self.loop = ConsumeLoop(
            f"control queue of endpoint {name}", self._open, self._handle, policy=policy,
            max_batch=100, timeout=0.25, after_wait=self._after_wait, on_connected=self._connected,
            should_stop=stopped.is_set, logger=log,
        )
        self.thread = threading.Thread(target=self._run, name="volley-control", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.loop.stop()

    def _open(self) -> Consumer:
        try:
            return open_consumer(self.url, self.queue, prefetch=100, decode=False, **self.amqp)
        except ConnectionError as exc:
            if channel_code(exc) == NOT_FOUND:
                raise _NoControlQueue(str(exc)) from exc
            raise

    def _run(self) -> None:
        try:
            self.loop.run()
        except _NoControlQueue as exc:
            log.warning("the service declared no control queue %s (%s): it predates cancelling, and "
                        "tasks sent to this endpoint cannot be cancelled", self.queue, exc)
        except Exception:
            log.exception("the control queue listener stopped; tasks cannot be cancelled until the "
                          "endpoint restarts")
        finally:
            self.caught_up.set()  # nothing more will come: tasks must not wait for it

    def _connected(self, _consumer: Consumer, _reconnected: bool) -> None:
        self._unrecorded.clear()  # the old consumer's tags are void: those notices come again

    def _after_wait(self, consumer: Consumer) -> None:
        if not self._handled:
            self.caught_up.set()
        self._handled = False
        if self._unrecorded and time.monotonic() >= self._next_try:
            self._record(consumer, [], [])

    def _handle(self, consumer: Consumer, batch: Sequence[Delivery]) -> None:
        self._handled = True
        fresh: list[tuple[int, list[str]]] = []
        notices: list[CancelNotice] = []
        for d in batch:
            try:
                notice = parse_control(d.body)
            except ValueError as exc:
                log.error("dead-lettering an unusable control notice: %s", exc)
                consumer.nack(d.tag, requeue=False)
                continue
            fresh.append((d.tag, notice.task_ids))
            notices.append(notice)
        if fresh:
            self._record(consumer, fresh, notices)

    def _record(self, consumer: Consumer, fresh: list[tuple[int, list[str]]],
                notices: Sequence[CancelNotice]) -> None:
        """Write the ids of ``fresh`` (and of earlier notices the disk refused) to the record,
        hand ``notices`` to the intake, and ack the notices now on disk."""
        pending = self._unrecorded + fresh
        try:
            self.record.add(task_id for _, ids in pending for task_id in ids)
        except OSError as exc:
            self._unrecorded = pending
            self._next_try = time.monotonic() + RECORD_RETRY_S
            if not self._failing:
                log.error("could not record cancelled tasks in %s (%s): the cancels apply, but their "
                          "notices stay unacked until the record is on disk (retried every %.0f s); "
                          "free space there", self.record.path, exc, RECORD_RETRY_S)
            self._failing = True
        else:
            if self._failing:
                log.warning("cancelled tasks recorded in %s again", self.record.path)
            self._failing = False
            self._unrecorded = []
        for notice in notices:  # the record knows the ids already (in memory at least)
            self.notices.put(notice)
        if not self._unrecorded:
            for tag, _ in pending:
                consumer.ack(tag)
