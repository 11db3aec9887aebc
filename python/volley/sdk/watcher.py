"""The result watcher: one per task group per process, streaming results into futures.

It consumes ``<queue_prefix><task_group_id>`` through the selected transport (native by default)
in batches, resolves futures, and acks a batch only after handling it.  Results that arrive
before their future is known (the submit response is still in flight) wait in a dict.  A body
that is not a valid ``Result`` is dead-lettered once, not redelivered forever.

The stream is read by one watcher at a time (an exclusive consumer): two consumers of one queue
would each get half the results, and each would keep the other's.  A watcher that cannot have
the stream -- another process or Client reads the group, or the broker cannot be reached (a
blocked AMQP port) -- resolves its futures from the service instead, on a slow poll of
``/v2/batch_status``, and takes the stream when it can.  A stream that stays quiet while futures
are open is checked against the service too: a full queue drops its oldest results.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from volley.protocol.batches import results_in
from volley.sdk.future import ComputeFuture
from volley.sdk.http import ComputeAPIError
from volley.sdk.outcome import resolve_document, resolve_message
from volley.transport import open_consumer
from volley.transport.base import ACCESS_REFUSED, NOT_FOUND, channel_code
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
# deliveries the broker may hand the watcher before it acks
PREFETCH = 4096
# A watcher without the stream asks the service for its open futures every POLL_FIRST_S at
# first, twice as long after each round that finds nothing (up to POLL_MAX_S), and soon again
# once new futures are registered.  It tries to take the stream every STREAM_RETRY_S.
POLL_FIRST_S = 1.0
POLL_MAX_S = 30.0
STREAM_RETRY_S = 10.0
# A stream with futures open and no delivery for QUIET_S is checked against the service; the
# check's interval doubles while checks find nothing (up to CHECK_MAX_S).
QUIET_S = 10.0
CHECK_MAX_S = 300.0
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


def _service_key(url: str) -> str:
    """One spelling of a service address: scheme and host in lower case, no default port, no
    trailing slash."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return url
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if port is not None and (scheme, port) not in (("http", 80), ("https", 443)):
        host = f"{host}:{port}"
    return f"{scheme}://{host}{parts.path.rstrip('/')}"


def _key(client: Any, task_group_id: str) -> tuple[str, str]:
    return _service_key(str(getattr(client, "web_service_address", ""))), task_group_id


def _held_elsewhere(exc: BaseException) -> bool:
    """The broker refused the exclusive consumer: another watcher reads the stream."""
    return channel_code(exc) == ACCESS_REFUSED and "exclusive" in str(exc).lower()


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
        # tasks resolved from the service: their queued result, should it still come, is a
        # duplicate to drop, not a result to keep for a future yet to be registered (an ordered
        # set, bounded like the ids let go)
        self._recovered: dict[str, None] = {}
        # "starting", then "stream" while the watcher reads its stream, "poll" while it fetches
        # results from the service instead
        self.mode = "starting"
        self._ever_streamed = False
        self._warned_unreachable = False
        self._warned_shared = False
        self._poller: threading.Thread | None = None
        self._poll_lock = threading.Lock()
        self._poll_wake = threading.Event()
        self._stopped = threading.Event()
        self._last_delivery = 0.0
        self._next_check = 0.0
        self._check_every = QUIET_S
        # ids of unmatched results let go (an ordered set: oldest first), and the futures
        # registered for such ids since, to look up at the service
        self._forgotten: dict[str, None] = {}
        self._let_go = 0
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
        if added and self.mode == "poll":
            self._poll_wake.set()  # ask about the new futures soon
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
        self._stopped.set()
        self._poll_wake.set()
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
            max_batch=PREFETCH,
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
        self._stopped.set()
        self._poll_wake.set()
        self._finish(reason)

    def _open_consumer(self) -> Any:
        """A consumer on the group's result queue.  While the service or broker is down this
        raises ConnectionError and the loop waits with the shared back-off; meanwhile (and while
        another watcher holds the stream) the poller fetches results from the service."""
        info = _service_call(lambda: self.client.get_result_amqp_url(retry_for=0))
        queue = info["queue_prefix"] + self.task_group_id
        retry = POLL_FIRST_S
        while True:
            try:
                return open_consumer(
                    info["connection_url"], queue, transport=self.transport,
                    ca_file=getattr(self.client, "ca_file", None), port=self.port, prefetch=PREFETCH,
                    exclusive=True,
                )
            except ConnectionError as exc:
                if _held_elsewhere(exc):
                    # not an outage: another process or Client reads this group's stream.
                    # Results come from the service until this watcher can take it over.
                    if not self._warned_shared:
                        self._warned_shared = True
                        log.info("task group %s: another consumer holds its result stream (a "
                                 "second process, a Client spelling the service address "
                                 "differently, or this process's previous connection, which the "
                                 "broker has not yet noticed is gone); results are fetched from "
                                 "the service until the stream is free", self.task_group_id)
                    self._start_polling()
                    until = time.monotonic() + retry
                    while time.monotonic() < until:
                        if self._stopped.wait(0.25) or self._should_stop():
                            raise ConnectionError("result watcher stopped") from exc
                    retry = min(STREAM_RETRY_S, retry * 2)
                    continue
                if channel_code(exc) == NOT_FOUND:
                    # the queue is gone (a broker that lost its state, an expiry): reading the
                    # task group declares it again; the results it missed come from the service
                    log.warning("result queue of task group %s is missing; asking the service to "
                                "declare it again", self.task_group_id)
                    _service_call(lambda: self.client._api.get(
                        f"/v2/taskgroup/{self.task_group_id}",
                        params={"volley_result_batches": "true"}, retry_for=0))
                elif not self._ever_streamed and not self._warned_unreachable:
                    self._warned_unreachable = True
                    log.warning("task group %s: cannot reach the result stream at %s (%s); results "
                                "are fetched from the service instead, every few seconds. If "
                                "outbound AMQP is blocked here, pass Executor(amqp_port=...) a "
                                "port the broker listens on (amqp_port=%s now)",
                                self.task_group_id, _where(info["connection_url"], self.port), exc,
                                self.port)
                self._start_polling()
                raise

    def _connected(self, _consumer: Any, reconnected: bool) -> None:
        with self._poll_lock:
            polled = self.mode == "poll"
            self.mode = "stream"
        self._ever_streamed = True
        self._poll_wake.set()  # the poller ends
        now = time.monotonic()
        self._last_delivery, self._next_check, self._check_every = now, now + QUIET_S, QUIET_S
        if reconnected or polled:
            # After an outage, or after reading results from the service while the stream was
            # someone else's, ask for every task still awaited and resolve those completed
            # meanwhile: their result may have been delivered to a consumer that died or to the
            # other watcher, or lost with a broker's state; waiting on the queue could be forever.
            with self._lock:
                waiting = list(self._open)
            done = self._from_service(waiting)
            if waiting and reconnected:
                log.warning("task group %s: %d of %d awaited results were complete at the service "
                            "after the outage", self.task_group_id, done, len(waiting))

    def _after_wait(self, _consumer: Any) -> None:
        # The service calls here must not cost the stream: a service that is busy or away (a
        # 503, a restart) is asked again later, and the stream goes on meanwhile.
        if self._lookup:
            with self._lock:
                ids, self._lookup = self._lookup, []
            try:
                self._from_service(ids)
            except ConnectionError as exc:
                log.debug("task group %s: looking up results at the service failed: %s", self.task_group_id, exc)
                with self._lock:
                    self._lookup.extend(ids)
                self._next_check = time.monotonic() + QUIET_S  # and not before then
                return
        now = time.monotonic()
        if now >= self._next_check and now - self._last_delivery >= QUIET_S and self._open:
            # A quiet stream while futures wait: ask the service whether any completed.  A full
            # result queue drops its oldest results (drop-head), and a result may have reached
            # another consumer of the queue (an upstream SDK); either way it would never come.
            with self._lock:
                waiting = list(self._open)
            try:
                found = self._from_service(waiting)
            except ConnectionError as exc:
                log.debug("task group %s: checking open futures at the service failed: %s", self.task_group_id, exc)
                self._next_check = time.monotonic() + self._check_every
                return
            if found:
                log.warning("task group %s: %d of %d awaited results were complete at the service "
                            "but never came on the result stream (a full result queue drops its "
                            "oldest results)", self.task_group_id, found, len(waiting))
            self._check_every = QUIET_S if found else min(CHECK_MAX_S, self._check_every * 2)
            self._next_check = time.monotonic() + self._check_every

    # --- results from the service, while the stream is not this watcher's -------------------------
    def _start_polling(self) -> None:
        # under the lock the poller decides to end under: it either sees "poll" and goes on, or
        # has ended and cleared its slot, and a new one starts
        with self._poll_lock:
            self.mode = "poll"
            if self._poller is None:
                self._poll_wake.clear()
                self._poller = threading.Thread(target=self._poll, name=f"{self.name}-poll", daemon=True)
                self._poller.start()

    def _poll(self) -> None:
        """Resolve open futures from the service until the stream is this watcher's again."""
        interval = 0.0  # the first round at once: the results may be stored already
        while True:
            if self._poll_wake.wait(interval):
                self._poll_wake.clear()
                interval = POLL_FIRST_S  # new futures: ask soon, not at once (submit bursts)
                self._stopped.wait(POLL_FIRST_S)
            with self._poll_lock:
                if self._stopped.is_set() or self.mode != "poll":
                    self._poller = None
                    return
            with self._lock:
                waiting = list(self._open)
            if not waiting:
                interval = POLL_MAX_S
                continue
            try:
                found = self._from_service(waiting)
            except ConnectionError as exc:  # the service is away too: the loop's outage
                log.debug("task group %s: polling the service failed: %s", self.task_group_id, exc)
                found = 0
            except Exception:  # never let the poller die quietly: it is all these futures have
                log.exception("task group %s: polling the service failed", self.task_group_id)
                found = 0
            interval = POLL_FIRST_S if found else min(POLL_MAX_S, max(POLL_FIRST_S, interval * 2))

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
                        self._recovered[tid] = None
                        if len(self._recovered) > FORGOTTEN_LIMIT:
                            del self._recovered[next(iter(self._recovered))]
            serializer = self.client.fx_serializer
            for f, doc in ready:
                resolve_document(f, doc, serializer)
            done += len(ready)
        return done

    def _handle_and_ack(self, consumer: Any, batch: Any) -> None:
        self._last_delivery = time.monotonic()
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
        self._let_go += 1
        # one line, then one per 10,000 more: a stream of results for another reader's futures
        # (a second Client of this process on the same group) must not flood the log
        if self._let_go % 10_000 == 1:
            log.warning("task group %s: more than %d results arrived for no known future; the oldest "
                        "are let go (%d so far; the service still has them)", self.task_group_id,
                        UNMATCHED_LIMIT, self._let_go)

    def _handle(self, consumer: Any, batch: Any) -> None:
        ready = []
        # Only the service's broker user may be the sender (RabbitMQ refuses a forged user_id):
        # anything else was put in the queue by another tenant, and unpickling it would run
        # their code here.  A service that names no sender (an older one) is not checked.
        sender = getattr(self.client, "result_sender", None)
        foreign: dict[str | None, int] = {}
        with self._lock:
            pop = self._open.pop
            for d in batch:
                if sender is not None and d.user_id != sender:
                    foreign[d.user_id] = foreign.get(d.user_id, 0) + 1
                    consumer.nack(d.tag, requeue=False)
                    continue
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
                            del self._recovered[tid]  # resolved from the service already
                            continue
                        self._hold(tid, d.timestamp, m)
                    else:
                        ready.append((f, d.timestamp, m))
        if foreign:
            log.warning("dead-lettered %d message(s) on the result queue of task group %s, unread: "
                        "not published by the service's broker user %r but by %s; another "
                        "broker user can write to this queue", sum(foreign.values()),
                        self.task_group_id, sender,
                        ", ".join("no user_id" if u is None else repr(u) for u in foreign))
        resolve = self._resolve
        for f, ts, m in ready:
            resolve(f, ts, m)

    def _resolve(self, fut: ComputeFuture, timestamp: int | None, msg: Any) -> None:
        resolve_message(fut, msg, timestamp, self.client.fx_serializer)


def _where(connection_url: str, port: int | None) -> str:
    """host:port of the broker a consumer would connect to (``port`` overrides the URL's)."""
    try:
        parts = urlsplit(connection_url)
        return f"{parts.hostname}:{port or parts.port or (5671 if parts.scheme == 'amqps' else 5672)}"
    except ValueError:
        return "the broker"
