"""Publishing finished results: batched, with publisher confirms, kept on disk until confirmed.

One thread (``volley-results``) takes finished results from a queue, publishes them in batches
of up to 500 and waits for the broker's confirms together.  A confirmed result is reported to
``on_confirmed`` (the task's delivery is then acked).  One the broker did not confirm (an
outage, a full ``results`` queue) goes to ``unacked_results/`` and is re-sent every
``RESEND_PERIOD`` seconds until it is; its task is not run again meanwhile.

When the service reads result batches (``volley.protocol.batches``), the results of one batch
travel several to a message, up to ``MAX_BATCH_BYTES`` each; the broker's one confirm then
settles all of them.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from volley.endpoint.engines.base import error_result
from volley.endpoint.store import ResultStore
from volley.protocol import topology as topo
from volley.protocol.batches import messages_for
from volley.protocol.codes import ResultCode
from volley.protocol.outcomes import ACK
from volley.transport import Publisher

log = logging.getLogger(__name__)

# How often stored (unconfirmed) results are re-sent.
RESEND_PERIOD = 2.0
BATCH = 500


class ResultSender:
    def __init__(self, publisher: Publisher, route: tuple[str, str], store: ResultStore,
                 on_confirmed: Callable[[str], None], *, endpoint_id: str | None = None,
                 batches: bool = False) -> None:
        self.publisher = publisher
        self.endpoint_id = endpoint_id
        self.batches = batches
        self.exchange, self.routing_key = route
        self.store = store
        self.on_confirmed = on_confirmed
        self._done: queue.SimpleQueue[tuple[str, bytes] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._loop, name="volley-results", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def put(self, task_id: str, body: bytes) -> None:
        """A packed result to send (any thread)."""
        self._done.put((task_id, body))

    @property
    def idle(self) -> bool:
        return self._done.empty()

    def stop(self, timeout: float = 30.0) -> None:
        """Send what is queued (and try the stored ones once more), then end the thread."""
        if self.thread.is_alive():
            self._done.put(None)
            self.thread.join(timeout=timeout)

    def _within_limit(self, task_id: str, body: bytes) -> bytes:
        """``body``, or if the broker would refuse it (closing the channel: taken for an outage,
        it would be re-sent for ever, and the rest of its batch with it) an error result
        naming the limit."""
        if len(body) <= topo.MAX_MESSAGE_SIZE:
            return body
        text = (f"MaxResultSizeExceeded: the result message of {len(body)} bytes exceeds the "
                f"broker's {topo.MAX_MESSAGE_SIZE} byte (16 MiB) max_message_size; multi-byte "
                "characters and JSON escapes count several bytes each: return less data")
        log.error("task %s: %s", task_id, text)
        return error_result(task_id, text, ResultCode.MAX_RESULT_SIZE_EXCEEDED, f"remote error: {text}",
                            self.endpoint_id)

    def _publish(self, items: list[tuple[str, bytes]]) -> list[bool]:
        items = [(task_id, self._within_limit(task_id, body)) for task_id, body in items]
        bodies = [body for _, body in items]
        messages = messages_for(bodies) if self.batches else [(1, body, None) for body in bodies]
        now = int(time.time())
        try:
            outcomes = self.publisher.publish_batch(
                [(self.exchange, self.routing_key, body, headers, now) for _, body, headers in messages],
                mandatory=True,
            )
        except (ConnectionError, TimeoutError) as exc:
            log.error("could not publish %d result(s): %s", len(items), exc)
            return [False] * len(items)
        # one outcome per message: it holds for every result the message carries
        per_result = [outcome for (n, _, _), outcome in zip(messages, outcomes, strict=True) for _ in range(n)]
        for (task_id, _), outcome in zip(items, per_result, strict=True):
            if outcome != ACK:
                log.error("the broker did not accept the result of %s (%s)", task_id, outcome)
        return [o == ACK for o in per_result]

    def _send(self, items: list[tuple[str, bytes]]) -> None:
        for (task_id, body), ok in zip(items, self._publish(items), strict=True):
            if ok:
                self.on_confirmed(task_id)
                continue
            try:
                self.store.put(task_id, body)
                log.warning("result of %s kept in %s for re-sending", task_id, self.store.dir)
            except OSError as exc:
                # not stored, not acked: the task runs again after a restart
                log.error("cannot store the result of %s (%s); it will run again", task_id, exc)

    def _resend_stored(self) -> None:
        ids = self.store.task_ids()
        for start in range(0, len(ids), 100):
            chunk = [(tid, body) for tid in ids[start:start + 100] if (body := self.store.get(tid)) is not None]
            if not chunk:
                continue
            results = self._publish(chunk)
            for (task_id, _), ok in zip(chunk, results, strict=True):
                if ok:
                    self.store.delete(task_id)
                    self.on_confirmed(task_id)
            if not all(results):
                return  # still failing; try again later

    def _loop(self) -> None:
        last_resend = 0.0
        stopping = False
        while True:
            items: list[tuple[str, bytes]] = []
            try:
                batch = [self._done.get(timeout=RESEND_PERIOD / 2)]
                while len(batch) < BATCH:
                    try:
                        batch.append(self._done.get_nowait())
                    except queue.Empty:
                        break
                stopping = any(i is None for i in batch)
                items = [i for i in batch if i is not None]
            except queue.Empty:
                pass
            if items:
                self._send(items)
            now = time.monotonic()
            if (now - last_resend >= RESEND_PERIOD or stopping) and len(self.store):
                last_resend = now
                self._resend_stored()
            if stopping:
                return
