"""The endpoint's control queue: cancel notices from the service (docs/endpoint.md, "Cancel").

A thread of its own consumes ``<endpoint_id>.control`` and hands each notice to the task
intake through a queue; the intake applies them on its own thread between waits, so nothing is
added to the path of a task.  A service older than this endpoint declares no control queue:
the listener then logs once that tasks cannot be cancelled here and stops.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from typing import Any

from volley.protocol import topology as topo
from volley.protocol.control import CancelNotice, parse_control
from volley.transport import Consumer, Delivery, open_consumer
from volley.transport.base import NOT_FOUND, channel_code
from volley.transport.reconnect import ConsumeLoop, ReconnectPolicy

log = logging.getLogger(__name__)


class _NoControlQueue(RuntimeError):
    pass


class ControlListener:
    def __init__(self, name: str, endpoint_id: str, url: str, *, amqp: dict[str, Any],
                 policy: ReconnectPolicy, stopped: threading.Event,
                 notices: queue.SimpleQueue[CancelNotice]) -> None:
        self.url, self.queue, self.amqp = url, topo.control_queue(endpoint_id), amqp
        self.notices = notices
        self.loop = ConsumeLoop(
            f"control queue of endpoint {name}", self._open, self._handle, policy=policy,
            max_batch=100, timeout=0.5, should_stop=stopped.is_set, logger=log,
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

    def _handle(self, consumer: Consumer, batch: Sequence[Delivery]) -> None:
        for d in batch:
            try:
                notice = parse_control(d.body)
            except ValueError as exc:
                log.error("dead-lettering an unusable control notice: %s", exc)
                consumer.nack(d.tag, requeue=False)
                continue
            self.notices.put(notice)
            consumer.ack(d.tag)
