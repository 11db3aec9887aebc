"""Task intake: consume the endpoint's task queue and hand each task to the engine.

Runs on the agent's main thread, inside the one consume-and-reconnect loop
(``volley.transport.reconnect.ConsumeLoop``): the task consumer is exclusive (a second instance
of the endpoint is refused) with a bounded prefetch.  Each delivery is checked (a valid task
message, usable headers, an allowed function) and then either run or answered at once with an
error result; the ack waits until the result is confirmed (:mod:`volley.endpoint.acks`).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from functools import partial
from typing import Any

from volley.endpoint.acks import DeliveryBook
from volley.endpoint.attempts import AttemptLog
from volley.endpoint.cancels import CancelRecord
from volley.endpoint.engines import Engine, EngineStopped
from volley.endpoint.engines.base import cancelled_result, error_result
from volley.endpoint.errors import QueueHeld
from volley.endpoint.prefetch import AdaptivePrefetch
from volley.endpoint.results import ResultSender
from volley.protocol.codes import ResultCode
from volley.protocol.control import CancelNotice
from volley.protocol.headers import parse_task_headers
from volley.transport import Consumer, Delivery, open_consumer
from volley.transport.base import ACCESS_REFUSED, channel_code
from volley.transport.reconnect import ConsumeLoop, ReconnectPolicy

log = logging.getLogger(__name__)

# How soon a confirmed result's ack goes out while tasks are in flight.  A long wait here
# capped a whole stack at about prefetch / wait tasks per second (~90/s at the default).
ACK_POLL_S = 0.005


def _held_by_another(exc: BaseException) -> bool:
    # 403 alone also means "no permission" (a broker that lost the endpoint's grants, to be
    # restored by the service): only the exclusive-use refusal means a second instance
    return channel_code(exc) == ACCESS_REFUSED and "exclusive" in str(exc).lower()


class TaskIntake:
    def __init__(
        self,
        name: str,
        endpoint_id: str,
        queue_info: dict[str, Any],
        *,
        amqp: dict[str, Any],
        prefetch: AdaptivePrefetch,
        engine: Engine,
        book: DeliveryBook,
        results: ResultSender,
        attempts: AttemptLog,
        cancels: CancelRecord,
        stored: Callable[[str], bool],
        allowed_functions: list[str] | None,
        policy: ReconnectPolicy,
        stopped: threading.Event,
        check_health: Callable[[], None],
    ) -> None:
        self.name, self.endpoint_id = name, endpoint_id
        self.queue_info, self.amqp, self.prefetch = queue_info, amqp, prefetch
        self.engine, self.book, self.results = engine, book, results
        self.attempts = attempts  # attempts lost when an earlier run of the agent died
        self.stored = stored  # a result kept from before a crash: re-sent, not run again
        self.allowed = allowed_functions
        self.check_health = check_health
        self.received = 0
        self.rejected = 0
        # cancel notices (volley.endpoint.control), applied on this thread between waits; their
        # ids are in the record already, which drops such a task whenever it is delivered
        self.notices: queue.SimpleQueue[CancelNotice] = queue.SimpleQueue()
        self.cancels = cancels
        self.loop = ConsumeLoop(
            f"task intake of endpoint {name}",
            self.open_consumer,
            self._dispatch_batch,
            policy=policy,
            max_batch=256,
            # while tasks run, come back often: their acks (which free prefetch credit for the
            # next deliveries) are sent from this thread, between waits; idle, wait long
            timeout=lambda: ACK_POLL_S if len(self.book) else 0.2,
            after_wait=self._after_wait,
            on_connected=self._connected,
            should_stop=stopped.is_set,
            close_on_exit=False,  # the agent's shutdown still acks the tasks that finish in the grace
            logger=log,
        )

    @property
    def consumer(self) -> Consumer | None:
        return self.loop.consumer

    @property
    def restarts(self) -> int:
        return max(0, self.loop.connections - 1)

    def open_consumer(self) -> Consumer:
        info = self.queue_info
        try:
            p = self.prefetch
            consumer = open_consumer(info["connection_url"], info["queue"], prefetch=p.ceiling, exclusive=True,
                                     channel_prefetch=p.current if p.adaptive else None, **self.amqp)
        except ConnectionError as exc:
            if _held_by_another(exc):
                raise QueueHeld(
                    f"the task queue {info['queue']} is held by another consumer: a second instance of "
                    f"endpoint {self.name!r} ({self.endpoint_id}) is running, perhaps on another machine; "
                    f"stop it first ({exc})"
                ) from exc
            raise
        self.book.new_consumer()
        return consumer

    def run(self, first: Consumer) -> None:
        """Consume until stopped; raises ``GaveUp`` past ``$VOLLEY_GIVE_UP_AFTER``."""
        self.loop.run(first)

    def _connected(self, _consumer: Consumer, reconnected: bool) -> None:
        if reconnected:
            # tasks still running keep running; their redeliveries are matched to them
            log.warning("task consumer reopened (restart %d); %d tasks held", self.restarts, len(self.book))

    def _after_wait(self, consumer: Consumer) -> None:
        if not self.notices.empty():
            self._apply_cancels()
        before = self.book.completed
        self.book.ack_confirmed(consumer)
        self.prefetch.finished(self.book.completed - before)
        deeper = self.prefetch.update()
        if deeper is not None:
            consumer.set_prefetch(deeper)
        self.check_health()

    def _apply_cancels(self) -> None:
        while True:
            try:
                notice = self.notices.get_nowait()
            except queue.Empty:
                return
            for task_id in notice.task_ids:
                if task_id in self.book:
                    outcome = self.engine.cancel(task_id, notice.force)
                    log.info("cancel%s of task %s: %s", " (force)" if notice.force else "", task_id, outcome)
                elif not self.book.was_answered(task_id):
                    # not received yet: answered now (so the service knows at once), and its
                    # delivery dropped when it comes (the record)
                    self._put(task_id, cancelled_result(task_id, "it was cancelled before it started",
                                                        self.endpoint_id))

    def _dispatch_batch(self, consumer: Consumer, batch: Sequence[Delivery]) -> None:
        for d in batch:
            self._dispatch(consumer, d)

    def _put(self, task_id: str, result: bytes) -> None:
        self.attempts.ended(task_id)
        self.results.put(task_id, result)

    def _answer(self, task_id: str, text: str, code: str, user_message: str) -> None:
        self._put(task_id, error_result(task_id, text, code, user_message, self.endpoint_id))

    def _dispatch(self, consumer: Consumer, d: Delivery) -> None:
        m = d.message
        if m is None or m.kind != "task" or not m.task_id:
            # no task id to answer to: dead-letter it (the task queue has a DLX) with a log line
            why = d.invalid or f"a {getattr(m, 'kind', '?')!r} message is not a task"
            log.error("dead-lettering an unusable task message (%s)", why)
            self.rejected += 1
            consumer.nack(d.tag, requeue=False)
            return
        task_id = m.task_id
        if task_id in self.book:
            # redelivered after our consumer reconnected (or sent twice): it is already running
            # (or its result is stored); answer the new delivery when that result is confirmed
            self.book.retrack(consumer, task_id, d.tag)
            return
        if self.book.was_answered(task_id):
            consumer.ack(d.tag)  # its result is confirmed already
            self.cancels.dropped(task_id)
            return
        self.book.track(task_id, d.tag)
        self.received += 1
        self.prefetch.received(len(d.body))
        if self.stored(task_id):
            return  # ran before a crash; the stored result is re-sent, then this is acked
        if task_id in self.cancels:
            # cancelled before it came; the answer sent then may have died with an earlier run of
            # the agent, so it is answered again, and the delivery acked once that is confirmed
            self.cancels.dropped(task_id)
            self._put(task_id, cancelled_result(task_id, "it was cancelled before it started", self.endpoint_id))
            return
        headers = parse_task_headers(d.headers or {}, task_id)
        if headers.problems:
            text = "; ".join(headers.problems)
            log.error("task %s rejected: %s", task_id, text)
            self.rejected += 1
            self._answer(task_id, f"Task message rejected by endpoint {self.endpoint_id}: {text}",
                         ResultCode.COULD_NOT_EXECUTE, f"remote error: {text}")
            return
        if self.allowed is not None and headers.function_id not in self.allowed:
            text = f"Function {headers.function_id} not permitted on endpoint {self.endpoint_id}"
            self._answer(task_id, text, ResultCode.FUNCTION_NOT_ALLOWED, text)
            return
        fut = self.engine.submit(task_id, d.body, headers.resource_specification, headers.result_serializers,
                                 headers.max_retries, self.attempts.causes(task_id))
        fut.add_done_callback(partial(self._finished, task_id))

    def _finished(self, task_id: str, f: Future) -> None:
        exc = f.exception()
        if isinstance(exc, EngineStopped):
            return  # no result: the delivery stays unacked and the task runs again next time
        if exc is not None:
            log.error("engine failed task %s: %r", task_id, exc)
            self._answer(task_id, f"The endpoint's engine failed this task: {exc!r}",
                         ResultCode.UNKNOWN_TASK_FAILURE, f"remote error: {exc!r}")
        else:
            self._put(task_id, f.result())
