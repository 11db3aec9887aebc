"""The result watcher: one per task group per process, streaming results into futures.

It consumes ``<queue_prefix><task_group_id>`` through the selected transport (native by default)
in batches, resolves futures, and acks a batch only after handling it.  Results that arrive
before their future is known (the submit response is still in flight) wait in a dict.  A body
that is not a valid ``Result`` is dead-lettered once, not redelivered forever.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from volley.protocol.batches import results_in
from volley.protocol.codes import ResultCode
from volley.sdk.future import ComputeFuture
from volley.sdk.http import ComputeAPIError
from volley.transport import open_consumer
from volley.transport.base import NOT_FOUND, channel_code
from volley.transport.reconnect import ConsumeLoop, GaveUp, ReconnectPolicy

log = logging.getLogger(__name__)

# task ids per /v2/batch_status request when recovering after an outage
RECOVER_CHUNK = 1000
# Results held for futures not registered yet, per task group.  They are normally held for the
# moments a submit response is in flight; a stream of results nobody claims (another process
# consuming the same group, a foreign message) must not grow without bound.  Beyond the limit
# the oldest are let go and only their ids kept: should a future for one be registered after
# all, its result is fetched from the service, which stores every result.
UNMATCHED_LIMIT = 10_000
FORGOTTEN_LIMIT = 200_000
T = TypeVar("T")


def _service_call(call: Callable[[], T]) -> T:
    """Run one service call; a service that is down or answers 5xx is an outage like a lost
    broker (ConnectionError), to be waited out by the loop, not a reason to fail futures."""
    try:
        return call()
    except ComputeAPIError as exc:
        if exc.http_status >= 500 or exc.http_status == 429:
            raise ConnectionError(f"the Volley service answered {exc.http_status}: {exc.message}") from exc
        raise

# keyed by (service address, task group id): a process-default task group id may be used with
# more than one service, and each service's results come from its own broker
_WATCHERS: dict[tuple[str, str], ResultWatcher] = {}
_WATCHERS_LOCK = threading.Lock()
# Results a stopped watcher had received for futures not registered yet: they were acked, so
# they exist nowhere else; the group's next watcher takes them over.
_UNCLAIMED: dict[tuple[str, str], dict[str, tuple[int | None, Any]]] = {}


def _key(client: Any, task_group_id: str) -> tuple[str, str]:
    return str(getattr(client, "web_service_address", "")), task_group_id


def watcher_for(task_group_id: str, client: Any, *, transport: str | None, port: int | None) -> ResultWatcher:
    key = _key(client, task_group_id)
    with _WATCHERS_LOCK:
        w = _WATCHERS.get(key)
        if w is None or not w.is_alive() or w.stopping:
            w = ResultWatcher(task_group_id, client, transport=transport, port=port)
            # results an earlier watcher of this group received (and acked) but could not match
            w._received.update(_UNCLAIMED.pop(key, {}))
            _WATCHERS[key] = w
            w.start()
        else:
            w._stop_when_idle.clear()  # a new user arrived
        return w


def all_watchers() -> list[ResultWatcher]:
    with _WATCHERS_LOCK:
        return list(_WATCHERS.values())


class ResultWatcher(threading.Thread):

    def __init__(self, task_group_id: str, client: Any, *, transport: str | None, port: int | None) -> None:
        super().__init__(name=f"volley-results-{task_group_id[:8]}", daemon=True)
        self.task_group_id = task_group_id
        self.client = client
        self.transport = transport
        self.port = port
        self._lock = threading.Lock()
        self._open: dict[str, ComputeFuture] = {}
        self._received: dict[str, tuple[int | None, Any]] = {}
        self._stop_when_idle = threading.Event()
        self.stopping = False
        self._loop: ConsumeLoop | None = None
        # how long an outage may last before the group's open futures fail: by default as long
        # as it takes ($VOLLEY_GIVE_UP_AFTER sets a limit)
        self.policy = ReconnectPolicy.default()
        # tasks resolved from the service after an outage: their queued result, should it still
        # come, is a duplicate to drop, not a result to keep for a future yet to be registered
        self._recovered: set[str] = set()
        # ids of unmatched results let go (an ordered set: oldest first), and the futures
        # registered for such ids since, to look up at the service
        self._forgotten: dict[str, None] = {}
        self._lookup: list[str] = []

    # --- API used by executors ------------------------------------------------------------------
    def watch(self, futures: Iterable[ComputeFuture]) -> int:
        ready = []
        added = 0
        with self._lock:
            if self.stopping:
                raise RuntimeError("result watcher is shutting down")
            for f in futures:
                tid = f.task_id
                if tid is None or f._is_done() or tid in self._open:
                    continue
                early = self._received.pop(tid, None)
                if early is not None:
                    ready.append((f, early))
                else:
                    self._open[tid] = f
                    if self._forgotten and self._forgotten.pop(tid, 0) is None:
                        self._lookup.append(tid)  # its result came and was let go
                added += 1
        for f, (ts, msg) in ready:
            self._resolve(f, ts, msg)
        return added

    def adopt(self, received: dict[str, tuple[int | None, Any]]) -> None:
        """Take over results a predecessor received but could not match yet."""
        ready = []
        with self._lock:
            for tid, (ts, msg) in received.items():
                f = self._open.pop(tid, None)
                if f is None:
                    self._hold(tid, ts, msg)
                else:
                    ready.append((f, ts, msg))
        for f, ts, msg in ready:
            self._resolve(f, ts, msg)

    def open_futures(self) -> list[ComputeFuture]:
        with self._lock:
            return list(self._open.values())

    def stop_when_idle(self) -> None:
        """Stop once no future is open.  Results received for futures not registered yet are
        kept: the group's next watcher takes them over (``_UNCLAIMED``)."""
        self._stop_when_idle.set()

    def shutdown(self) -> None:
        self.stopping = True
        self._stop_when_idle.set()
        loop = self._loop
        if loop is not None:
            loop.stop()

    # --- the thread -------------------------------------------------------------------------------
    def run(self) -> None:
        self._loop = ConsumeLoop(
            f"result stream of task group {self.task_group_id}",
            self._open_consumer,
            self._handle_and_ack,
            policy=self.policy,
            max_batch=4096,
            timeout=0.25,
            on_connected=self._connected,
            after_wait=self._after_wait,
            should_stop=self._should_stop,
            logger=log,
        )
        reason: BaseException | None = None
        try:
            self._loop.run()
        except GaveUp as exc:
            reason = exc
        except Exception as exc:  # a bug: fail the futures with it rather than leave them hanging
            log.exception("result watcher of task group %s failed", self.task_group_id)
            reason = exc
        self._finish(reason)

    def _open_consumer(self) -> Any:
        """A consumer on the group's result queue; while the service or broker is down this
        raises ConnectionError and the loop waits with the shared back-off."""
        info = _service_call(lambda: self.client.get_result_amqp_url(retry_for=0))
        queue = info["queue_prefix"] + self.task_group_id
        try:
            return open_consumer(
                info["connection_url"], queue, transport=self.transport,
                ca_file=getattr(self.client, "ca_file", None), port=self.port, prefetch=4096,
            )
        except ConnectionError as exc:
            if channel_code(exc) == NOT_FOUND:
                # the queue is gone (a broker that lost its state, an expiry): reading the task
                # group declares it again; the results it missed come from /v2/batch_status
                log.warning("result queue of task group %s is missing; asking the service to "
                            "declare it again", self.task_group_id)
                _service_call(lambda: self.client._api.get(f"/v2/taskgroup/{self.task_group_id}",
                                                           params={"volley_result_batches": "true"},
                                                           retry_for=0))
            raise

    def _connected(self, _consumer: Any, reconnected: bool) -> None:
        if reconnected:
            # After an outage, ask the service for every task still awaited and resolve those
            # completed meanwhile: their result may have been delivered to a consumer that died,
            # or lost with a broker's state; waiting for it on the queue could take forever.
            with self._lock:
                waiting = list(self._open)
            done = self._from_service(waiting)
            if waiting:
                log.warning("task group %s: %d of %d awaited results were complete at the service "
                            "after the outage", self.task_group_id, done, len(waiting))

    def _after_wait(self, _consumer: Any) -> None:
        if self._lookup:
            with self._lock:
                ids, self._lookup = self._lookup, []
            self._from_service(ids)

    def _from_service(self, waiting: list[str]) -> int:
        """Resolve those of ``waiting`` that are complete at the service; how many were."""
        done = 0
        for i in range(0, len(waiting), RECOVER_CHUNK):
            chunk = waiting[i : i + RECOVER_CHUNK]
            reply = _service_call(lambda ids=chunk: self.client._api.post(  # type: ignore[misc]
                "/v2/batch_status", json={"task_ids": ids}, idempotent=True, retry_for=0))
            ready = []
            with self._lock:
                for tid, doc in (reply.get("results") or {}).items():
                    if not doc.get("completion_t"):
                        continue
                    f = self._open.pop(tid, None)
                    if f is not None:
                        ready.append((f, doc))
                        self._recovered.add(tid)
            for f, doc in ready:
                self._resolve_stored(f, doc)
            done += len(ready)
        return done

    def _resolve_stored(self, fut: ComputeFuture, doc: dict[str, Any]) -> None:
        try:
            if doc.get("status") == "cancelled":
                fut._cancel_here()
            elif doc.get("status") == "success":
                try:
                    fut.set_result(self.client.fx_serializer.deserialize(doc["result"]))
                except Exception as exc:
                    err = Exception(f"Malformed or unexpected data structure. Data: {doc.get('result')}")
                    err.__cause__ = exc
                    fut.set_exception(err)
            else:
                data = doc.get("exception") or ""
                if fut._retry is not None:
                    # the stored task has no error code: a matching type is taken as the user's
                    data = fut._retry.failed(data, True)
                    if data is None:
                        return
                fut.set_exception(_task_failed()(data, str(doc.get("completion_t"))))
        except Exception:  # InvalidStateError: cancelled by the user
            log.debug("future %s was cancelled or resolved already", fut.task_id)

    def _handle_and_ack(self, consumer: Any, batch: Any) -> None:
        self._handle(consumer, batch)
        # acked only once its futures are resolved.  (Deferring acks across batches was
        # measured too: no gain, as the broker rather than the ack limits the stream.)
        consumer.ack_through(batch[-1].tag)

    def _finish(self, reason: BaseException | None) -> None:
        key = _key(self.client, self.task_group_id)
        with _WATCHERS_LOCK:
            if _WATCHERS.get(key) is self:
                del _WATCHERS[key]
            successor = _WATCHERS.get(key)
            with self._lock:
                unclaimed, self._received = self._received, {}
            if unclaimed and successor is None:
                _UNCLAIMED.setdefault(key, {}).update(unclaimed)
        if unclaimed and successor is not None:
            successor.adopt(unclaimed)
        with self._lock:
            self.stopping = True
            leftovers = list(self._open.values())
            self._open.clear()
        if leftovers:
            err = reason or RuntimeError("SDK thread quit unexpectedly.")
            for f in leftovers:
                if not f.done():
                    f.set_exception(err)

    def _should_stop(self) -> bool:
        if self.stopping:
            return True
        if self._stop_when_idle.is_set():
            with self._lock:
                # a future cancelled by its user, or whose cancel the service was asked for and
                # its endpoint has not answered (an endpoint that is down), may never get a
                # result: it keeps no one waiting at exit
                for tid in [t for t, f in self._open.items() if f.done() or f._cancel_requested]:
                    del self._open[tid]
                if not self._open:
                    self.stopping = True  # from now on watch() refuses; callers start a new watcher
                return self.stopping
        return False

    def _hold(self, tid: str, timestamp: int | None, msg: Any) -> None:
        """Keep a result whose future is not registered yet (caller holds the lock)."""
        self._received[tid] = (timestamp, msg)
        if len(self._received) > UNMATCHED_LIMIT:
            self._let_go_oldest()

    def _let_go_oldest(self) -> None:
        oldest = next(iter(self._received))
        del self._received[oldest]
        self._forgotten[oldest] = None
        if len(self._forgotten) > FORGOTTEN_LIMIT:
            del self._forgotten[next(iter(self._forgotten))]
        log.warning("task group %s: more than %d results arrived for no known future; the oldest "
                    "is let go (the service still has it)", self.task_group_id, UNMATCHED_LIMIT)

    def _handle(self, consumer: Any, batch: Any) -> None:
        ready = []
        with self._lock:
            pop = self._open.pop
            for d in batch:
                m = d.message
                if m is not None and m.kind == "result":
                    carried = [m]  # the common case, without a call
                else:
                    results, refused = results_in(d)  # a result batch, or not a result
                    if refused:  # the service sends none: kept for a look, not resolved from
                        log.warning("dead-lettering a message on %s: %s", self.task_group_id, "; ".join(refused))
                        consumer.nack(d.tag, requeue=False)
                        continue
                    carried = [m for _body, m in results]
                for m in carried:
                    tid = m.task_id
                    f = pop(tid, None)
                    if f is None:
                        if self._recovered and tid in self._recovered:
                            self._recovered.discard(tid)  # resolved from the service already
                            continue
                        self._hold(tid, d.timestamp, m)
                    else:
                        ready.append((f, d.timestamp, m))
        resolve = self._resolve
        for f, ts, m in ready:
            resolve(f, ts, m)

    def _resolve(self, fut: ComputeFuture, timestamp: int | None, msg: Any) -> None:
        # No done() check first: set_result/set_exception on a future the user cancelled raise
        # InvalidStateError, caught below, and the common case saves a lock round trip.
        try:
            if msg.is_error:
                code = msg.error_code
                if code == _CANCELLED_CODE:
                    fut._cancel_here()
                    return
                data = msg.data
                if fut._retry is not None:
                    data = fut._retry.failed(data, code == _USER_ERROR_CODE)
                    if data is None:
                        return  # sent again: the same future resolves with a later attempt
                fut.set_exception(_task_failed()(data, str(timestamp or 0)))
            else:
                try:
                    value = self.client.fx_serializer.deserialize(msg.data)
                except Exception as exc:
                    err = Exception(f"Malformed or unexpected data structure. Data: {msg.data}")
                    err.__cause__ = exc
                    fut.set_exception(err)
                else:
                    fut.set_result(value)
        except Exception:  # InvalidStateError: cancelled by the user; the result is dropped
            log.debug("future %s was cancelled or resolved already", fut.task_id)


_CANCELLED_CODE = ResultCode.TASK_CANCELLED
_USER_ERROR_CODE = ResultCode.REMOTE_EXECUTION_ERROR


def _task_failed() -> type[Exception]:
    """``volley.errors.TaskExecutionFailed``, imported once (a function-level import costs a
    lookup per result)."""
    global _TASK_FAILED
    if _TASK_FAILED is None:
        from volley.errors import TaskExecutionFailed

        _TASK_FAILED = TaskExecutionFailed
    return _TASK_FAILED


_TASK_FAILED: type[Exception] | None = None
