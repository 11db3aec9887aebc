"""Publishing finished results: batched, with publisher confirms, kept on disk until confirmed.

One thread (``volley-results``) takes finished results from a queue, publishes them in batches
of up to 500 and waits for the broker's confirms together.  A confirmed result is reported to
``on_confirmed`` (the task's delivery is then acked).  One the broker did not confirm (an
outage, a full ``results`` queue) goes to ``unacked_results/`` and is re-sent every
``RESEND_PERIOD`` seconds until it is; its task is not run again meanwhile.

When ``unacked_results/`` cannot take it either (a full disk, a read-only mount), the result is
held in memory and re-sent on the shared back-off of ``volley.transport.reconnect`` until the
broker confirms it (or the disk takes it again): its delivery stays unacked meanwhile, so the
prefetch bounds how many can be held.  Only a stop loses them, and then their tasks run again at
the next start.  The failure is logged once per stretch, with its cause and what to do.

When the service reads result batches (``volley.protocol.batches``), the results of one batch
travel several to a message, up to ``MAX_BATCH_BYTES`` each; the broker's one confirm then
settles all of them.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator

from volley.endpoint.engines.base import error_result
from volley.endpoint.store import ResultStore
from volley.protocol import topology as topo
from volley.protocol.batches import messages_for
from volley.protocol.codes import ResultCode
from volley.protocol.outcomes import ACK
from volley.transport import Publisher
from volley.transport.reconnect import ReconnectPolicy

log = logging.getLogger(__name__)

# How often stored (unconfirmed) results are re-sent.
RESEND_PERIOD = 2.0
BATCH = 500


class ResultSender:
    def __init__(self, publisher: Publisher, route: tuple[str, str], store: ResultStore,
                 on_confirmed: Callable[[str], None], *, endpoint_id: str | None = None,
                 batches: bool = False, policy: ReconnectPolicy | None = None) -> None:
        self.publisher = publisher
        self.endpoint_id = endpoint_id
        self.batches = batches
        self.exchange, self.routing_key = route
        self.store = store
        self.on_confirmed = on_confirmed
        self._done: queue.SimpleQueue[tuple[str, bytes] | None] = queue.SimpleQueue()
        # neither confirmed nor stored: the store refused them too; only this thread uses it
        self._held: dict[str, bytes] = {}
        self._held_policy = policy or ReconnectPolicy.default()
        self._held_delays: Iterator[float] | None = None
        self._held_next_try = 0.0
        self.thread = threading.Thread(target=self._loop, name="volley-results", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def put(self, task_id: str, body: bytes) -> None:
        """A packed result to send (any thread)."""
        self._done.put((task_id, body))

    @property
    def idle(self) -> bool:
        return self._done.empty()

    @property
    def held(self) -> int:
        """Results held in memory because ``unacked_results/`` could not take them."""
        return len(self._held)

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

    def _publish(self, items: list[tuple[str, bytes]], *, retry: bool = False) -> list[bool]:
        """Publish with confirms; True for each result the broker confirmed.  A failed first
        try is logged; a failed re-send only at debug level (its stretch was logged already)."""
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
            log.log(logging.DEBUG if retry else logging.ERROR, "could not publish %d result(s): %s",
                    len(items), exc)
            return [False] * len(items)
        # one outcome per message: it holds for every result the message carries
        per_result = [outcome for (n, _, _), outcome in zip(messages, outcomes, strict=True) for _ in range(n)]
        refused = [(task_id, o) for (task_id, _), o in zip(items, per_result, strict=True) if o != ACK]
        if refused:
            kinds = ", ".join(sorted({str(o) for _, o in refused}))
            log.log(logging.DEBUG if retry else logging.ERROR,
                    "the broker did not accept %d of %d result(s) (%s), the first of task %s",
                    len(refused), len(items), kinds, refused[0][0])
        return [o == ACK for o in per_result]

    def _send(self, items: list[tuple[str, bytes]]) -> None:
        kept = 0
        for (task_id, body), ok in zip(items, self._publish(items), strict=True):
            if ok:
                self.on_confirmed(task_id)
            elif self._keep(task_id, body):
                kept += 1
        if kept:
            log.warning("%d result(s) kept in %s for re-sending", kept, self.store.dir)

    def _keep(self, task_id: str, body: bytes) -> bool:
        """Store an unconfirmed result for re-sending; if the store cannot take it, hold it in
        memory (False).  Its task is not acked either way, so it is never lost to a crash."""
        try:
            self.store.put(task_id, body)
            return True
        except OSError as exc:
            if not self._held:
                self._held_delays = self._held_policy.delays()
                self._held_next_try = time.monotonic() + self._next_held_delay()
                log.error(
                    "cannot keep unpublished results in %s (%s): they are held in memory and re-sent "
                    "until the broker takes them; free space in %s (or make it writable) -- if the "
                    "endpoint stops first, their tasks run again at its next start",
                    self.store.dir, exc, self.store.dir)
            self._held[task_id] = body
            return False

    def _next_held_delay(self) -> float:
        assert self._held_delays is not None
        return self._held_policy.jittered(next(self._held_delays))

    def _resend_held(self) -> None:
        """Re-send the results held in memory; what the broker still refuses goes to the store
        if it has room again, else waits for the next try of the back-off."""
        held = list(self._held.items())
        for start in range(0, len(held), BATCH):
            chunk = held[start:start + BATCH]
            for (task_id, body), ok in zip(chunk, self._publish(chunk, retry=True), strict=True):
                if ok:
                    del self._held[task_id]
                    self.on_confirmed(task_id)
                    continue
                try:
                    self.store.put(task_id, body)
                except OSError:
                    continue
                del self._held[task_id]
        if self._held:
            self._held_next_try = time.monotonic() + self._next_held_delay()
        else:
            self._held_delays = None
            log.warning("the results held in memory are all sent (or kept in %s again)", self.store.dir)

    def _resend_stored(self) -> None:
        ids = self.store.task_ids()
        for start in range(0, len(ids), 100):
            chunk = [(tid, body) for tid in ids[start:start + 100] if (body := self.store.get(tid)) is not None]
            if not chunk:
                continue
            results = self._publish(chunk, retry=True)
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
            wait = RESEND_PERIOD / 2
            if self._held:
                wait = max(0.0, min(wait, self._held_next_try - time.monotonic()))
            try:
                batch = [self._done.get(timeout=wait)]
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
            if self._held and (stopping or now >= self._held_next_try):
                self._resend_held()
            if stopping:
                if self._held:
                    log.error("%d result(s) held in memory are lost with this stop (%s had no room for "
                              "them); their tasks run again at the next start", len(self._held), self.store.dir)
                return
