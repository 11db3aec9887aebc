"""Background consumers of the service: the result router and the heartbeat listener.

The router stores each result before acking its message, then forwards it to the owner's
per-task-group queue with the completion time as AMQP ``timestamp``.  Ingestion is idempotent:
a result for a task that is already complete changes nothing (it is only forwarded again if the
first forward was never confirmed, and then from what is stored).  Only what the router's own
conditional UPDATE stored is forwarded as it came: a task completed by another writer between
the router's read and its UPDATE (a cancel, another service process) is forwarded, if at all,
from what is stored.  Anything that is not a valid ``Result`` for a known task of the
publishing endpoint is dead-lettered with a log line, never requeued; so is a result the
database refuses to store.  A message the router cannot settle -- its forward refused by the
broker, or its handling raising -- goes back to the queue at most ``MAX_TRIES`` times in all,
then to the dead-letter queue, while the messages around it go on.

A result batch from a Volley endpoint (``volley.protocol.batches``) is handled as its results,
each as if it had come alone, and settled once: requeued if any of its forwards was not
confirmed, else dead-lettered (whole, with every reason logged) if any result in it was refused,
else acked.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import CursorResult, Table, bindparam, literal_column, select, update
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from volley.protocol import topology as topo
from volley.protocol.batches import messages_for, results_in
from volley.protocol.codec import WireMessage, pack_result
from volley.protocol.codes import ResultCode
from volley.protocol.outcomes import ACK
from volley.service.credentials import broker_user_of
from volley.service.db import unavailable_cause
from volley.service.gateway import BrokerGateway
from volley.service.models import TERMINAL_STATES, Endpoint, Task, TaskGroup
from volley.transport import Consumer, Delivery, Publisher, open_consumer
from volley.transport.base import OutgoingMessage
from volley.transport.reconnect import ConsumeLoop, ReconnectPolicy

log = logging.getLogger(__name__)


def _endpoint_of(routing_key: str, suffix: str) -> str | None:
    head, dot, tail = routing_key.rpartition(".")
    return head if dot and tail == suffix else None


def _is_data_error(exc: DBAPIError) -> bool:
    """True when the database refused the data itself (it will refuse it again), as opposed to
    being unreachable or busy (worth retrying)."""
    return isinstance(exc, DataError | IntegrityError | ProgrammingError)


def _is_outage(exc: BaseException) -> bool:
    """True when the broker or the database is away or busy (a lock, a lost connection, a full
    pool): not the fault of the messages being handled, which wait it out instead of counting
    it as a failed try."""
    return isinstance(exc, ConnectionError | TimeoutError) or unavailable_cause(exc) is not None


def _as_outage(exc: BaseException) -> BaseException:
    """An outage as the ConnectionError the consume loop waits out with one line per stretch
    (any other exception it logs with a traceback at every try)."""
    if isinstance(exc, ConnectionError | TimeoutError):
        return exc
    return ConnectionError(f"the database is unavailable ({unavailable_cause(exc)}): {exc}")


def _changed(result: Any) -> int:
    """How many rows an UPDATE changed (for an executemany: in all)."""
    return int(cast(CursorResult[Any], result).rowcount)


def _task_id(d: _Part) -> str:
    """The task id of a delivery ``ResultRouter.handle`` accepted as a result."""
    assert d.message is not None and d.message.task_id is not None
    return d.message.task_id


@dataclass(frozen=True, slots=True)
class _Part:
    """One result a delivery carries (the delivery itself, or a result of a batch), routed as if
    it had come alone; its ``delivery`` is what gets settled."""

    delivery: Delivery
    body: bytes
    message: WireMessage

    @property
    def routing_key(self) -> str:
        return self.delivery.routing_key


def dead_letter(consumer: Consumer, delivery: Any, why: str) -> None:
    log.warning("dead-lettering message from %r: %s", delivery.routing_key, why)
    consumer.nack(delivery.tag, requeue=False)


class _Tries:
    """How many times each message failed to settle.  A requeued message comes back with a new
    delivery tag and no count of its own (classic queues keep none), so it is known by its
    routing key and body.  In memory and bounded: each service process counts for itself, and
    from zero after a restart."""

    LIMIT = 10_000

    def __init__(self) -> None:
        self._failed: OrderedDict[bytes, int] = OrderedDict()

    @staticmethod
    def _key(d: Delivery) -> bytes:
        h = hashlib.blake2b(d.routing_key.encode(), digest_size=16)
        h.update(b"\0")
        h.update(d.body)
        return h.digest()

    def failed(self, d: Delivery) -> int:
        """Count one more failure of ``d``'s message; return how many it has had."""
        key = self._key(d)
        n = self._failed.pop(key, 0) + 1
        self._failed[key] = n
        if len(self._failed) > self.LIMIT:
            self._failed.popitem(last=False)
        return n

    def settled(self, batch: Sequence[Delivery]) -> None:
        """Forget the failures of messages now settled (only a redelivered one can have any)."""
        if self._failed:
            for d in batch:
                if d.redelivered:
                    self._failed.pop(self._key(d), None)


class ConsumerLoop(threading.Thread):
    """A service thread consuming one queue through the one consume-and-reconnect loop.

    Broker and database trouble alike close the consumer (its unacked messages go back to the
    queue) and are waited out with the shared back-off, for as long as the service runs.
    ``on_reconnect`` runs after each reconnection that follows a loss: the broker may have come
    back without its state, and the service re-creates what it provisioned."""

    queue: str = ""

    def __init__(self, gateway: BrokerGateway, sessions: sessionmaker[Session], *,
                 on_reconnect: Callable[[], None] | None = None,
                 policy: ReconnectPolicy | None = None) -> None:
        super().__init__(name=f"volley-{self.queue}", daemon=True)
        self.gateway = gateway
        self.sessions = sessions
        self._on_reconnect = on_reconnect
        self.loop = ConsumeLoop(
            f"service consumer of {self.queue!r}",
            self._open,
            self.handle,
            policy=policy or ReconnectPolicy.default(),
            max_batch=1000,
            timeout=1.0,
            on_connected=self._connected,
            after_wait=self.after_wait,
            # a database that is down (or any bug in handling) must not kill the thread:
            # the batch goes back to the queue and is handled after the back-off
            retry_on=(Exception,),
            logger=log,
        )
        self.ready = self.loop.connected

    def _open(self) -> Consumer:
        return open_consumer(self.gateway.url, self.queue, transport=self.gateway.transport,
                             ca_file=self.gateway.ca_file, prefetch=2000)

    def _connected(self, _consumer: Consumer, reconnected: bool) -> None:
        if reconnected and self._on_reconnect is not None:
            self._on_reconnect()

    def stop(self) -> None:
        self.loop.stop()

    def run(self) -> None:
        self.loop.run()

    def handle(self, consumer: Consumer, batch: Sequence[Delivery]) -> None:
        raise NotImplementedError

    def after_wait(self, consumer: Consumer) -> None:
        """After every wait for messages, even an empty one (1 s at most)."""


@dataclass
class _Plan:
    """What a batch of results calls for: rows to store, forwards to send, messages to
    dead-letter; and, once forwarded, which deliveries the broker did not confirm."""

    rows: list[dict[str, Any]] = field(default_factory=list)  # parameters of _STORE
    forwards: list[tuple[Any, str, str, bytes, int]] = field(default_factory=list)  # delivery, task, queue, body, ts
    # tasks complete already whose result must still reach the SDK: forwarded from storage
    again: list[tuple[Any, str, str]] = field(default_factory=list)  # delivery, task, queue
    batched: set[str] = field(default_factory=set)  # the forwards' queues a Volley SDK reads: batches allowed
    rejected: list[tuple[Any, str]] = field(default_factory=list)
    unconfirmed: list[Any] = field(default_factory=list)  # the broker refused the forward
    unsent: list[Any] = field(default_factory=list)  # the broker could not be reached to forward


_TASKS = cast(Table, Task.__table__)
_GROUPS = cast(Table, TaskGroup.__table__)
# one executemany for every result of a batch; the first result stored wins
_STORE = (
    update(_TASKS)
    # the states as SQL literals: an expanding IN (...) cannot be used with executemany
    .where(_TASKS.c.id == bindparam("tid"),
           _TASKS.c.status.not_in([literal_column(f"'{state}'") for state in TERMINAL_STATES]))
    .values(status=bindparam("status"), result=bindparam("result"), exception=bindparam("exception"),
            details=bindparam("details"), completion_t=bindparam("now"), updated_at=bindparam("now"),
            forwarded=bindparam("fwd"))
)
# at most this many ids per IN (...): SQLite's bound-parameter limit is far above it
_IN_CHUNK = 500
# at most this many results per transaction of the router
ROUTE_CHUNK = 1000
# confirmed forwards are marked in the database together: this often, or this many at once
MARK_DELAY_S = 1.0
MARK_BATCH = 5000
# a message that fails to settle (its forward refused, its handling raising) is tried this
# many times in all, then dead-lettered
MAX_TRIES = 5


class ResultRouter(ConsumerLoop):
    queue = topo.RESULTS_QUEUE

    def __init__(self, gateway: BrokerGateway, sessions: sessionmaker[Session], *,
                 on_reconnect: Callable[[], None] | None = None) -> None:
        super().__init__(gateway, sessions, on_reconnect=on_reconnect)
        self._publisher: Publisher | None = None
        # tasks whose forward the broker confirmed, not yet marked ``forwarded`` in the database:
        # written together every MARK_DELAY_S (or MARK_BATCH marks), after a batch is acked, so
        # neither a result's latency nor each batch pays an UPDATE and a commit for them.  Lost
        # in a crash, a mark only means a duplicate of that result is forwarded again, which the
        # SDK ignores.
        self._marks: set[str] = set()
        self._marked_at = time.monotonic()
        self._tries = _Tries()

    def _forwarder(self) -> Publisher:
        if self._publisher is None or self._publisher.closed:
            self._publisher = self.gateway.open_publisher()
        return self._publisher

    def run(self) -> None:
        try:
            super().run()
        finally:
            try:
                self._mark_now()
            except Exception as exc:  # the database is away: duplicates get forwarded again
                log.warning("could not mark %d forwarded results at exit (%s)", len(self._marks), exc)
            if self._publisher is not None:
                self._publisher.close()

    def after_wait(self, _consumer: Consumer) -> None:
        if self._marks and (len(self._marks) >= MARK_BATCH or time.monotonic() - self._marked_at >= MARK_DELAY_S):
            self._mark_now()

    def _mark_now(self) -> None:
        if self._marks:
            with self.sessions() as s:
                self._write_marks(s)
                s.commit()
            self._marks.clear()
        self._marked_at = time.monotonic()

    def _write_marks(self, s: Session) -> None:
        """Mark the pending forwards in ``s`` (the caller commits, then clears them)."""
        confirmed = sorted(self._marks)
        for i in range(0, len(confirmed), _IN_CHUNK):
            s.execute(update(_TASKS).where(_TASKS.c.id.in_(confirmed[i : i + _IN_CHUNK])).values(forwarded=True))

    def handle(self, consumer: Consumer, batch: Sequence[Delivery]) -> None:
        try:
            self._settle(consumer, batch)
        except Exception as exc:
            if _is_outage(exc):
                raise _as_outage(exc) from exc
            if len(batch) == 1:
                self._try_again(consumer, batch[0], f"handling it raised {exc!r}", exc)
                return
            # some message in it may be poison: only handling each alone tells which, and lets
            # the others through
            log.warning("handling %d result messages together raised %r; handling them one by one",
                        len(batch), exc)
            for d in batch:
                try:
                    self._settle(consumer, [d])
                except Exception as one:
                    if _is_outage(one):
                        raise _as_outage(one) from one
                    self._try_again(consumer, d, f"handling it raised {one!r}", one)

    def _try_again(self, consumer: Consumer, d: Delivery, why: str, exc: BaseException | None = None) -> None:
        """Requeue a message that failed to settle, or dead-letter it at its MAX_TRIES-th failure."""
        n = self._tries.failed(d)
        if n >= MAX_TRIES:
            dead_letter(consumer, d, f"{why}; failed {n} times, given up")
            return
        # the first failure says why in full; the tries after it, only that they happen
        log.log(logging.WARNING if n == 1 else logging.INFO,
                "message from %r goes back to the queue (try %d of %d failed): %s",
                d.routing_key, n, MAX_TRIES, why, exc_info=exc if n == 1 else None)
        consumer.nack(d.tag, requeue=True)

    def _settle(self, consumer: Consumer, batch: Sequence[Delivery]) -> None:
        results: list[_Part] = []
        refused: dict[int, list[str]] = {}  # id(delivery) -> why (some of) it is refused
        for d in batch:
            carried, reasons = results_in(d)
            results += [_Part(d, body, m) for body, m in carried]
            if reasons:
                refused[id(d)] = reasons
        unsent: set[int] = set()  # id(delivery) of those to requeue
        unconfirmed: set[int] = set()  # id(delivery) of those to try again, a limited number of times
        # a batch of batch messages may hold many thousand results: routed ROUTE_CHUNK at a
        # time, so no transaction (nor IN (...) list) grows with it
        for i in range(0, len(results), ROUTE_CHUNK):
            plan = self._route(results[i : i + ROUTE_CHUNK])
            for item, why in plan.rejected:
                refused.setdefault(id(item.delivery), []).append(why)
            # stored, but not delivered to the SDK: a redelivery forwards it from the database
            unsent |= {id(item.delivery) for item in plan.unsent}
            unconfirmed |= {id(item.delivery) for item in plan.unconfirmed}
        if not refused and not unsent and not unconfirmed:
            consumer.ack_through(batch[-1].tag)
            self._tries.settled(batch)
            return
        for d in batch:
            if id(d) in unsent:
                consumer.nack(d.tag, requeue=True)
            elif id(d) in unconfirmed:
                self._try_again(consumer, d, "the broker refused to take its forward into the SDK queue "
                                "(the result is stored: REST serves it)")
            elif id(d) in refused:
                dead_letter(consumer, d, "; ".join(refused[id(d)]))
                self._tries.settled([d])
            else:
                consumer.ack(d.tag)
                self._tries.settled([d])

    def _route(self, results: Sequence[_Part]) -> _Plan:
        """Store the batch's results in one commit, then forward them to the SDK queues, then
        mark what the broker confirmed as ``forwarded``.  Storing first means a result the SDK
        holds is always one the REST API serves too (a client may ask for it at once).  Only the
        results the conditional UPDATE stored are forwarded as they came; a task that another
        writer completed since it was read is forwarded (when not yet) from what is stored."""
        with self.sessions() as s:
            plan = self._plan(s, results)
            stored = self._store_together(s, plan)
        refused_before = len(plan.rejected)
        if stored is None:
            stored = self._store_each(plan, results)
        refused = {_task_id(d) for d, _why in plan.rejected[refused_before:]}
        lost = {row["tid"] for row in plan.rows} - stored - refused
        if len(stored) < len(plan.rows):
            kept = []
            for f in plan.forwards:
                if f[1] in stored:
                    kept.append(f)
                elif f[1] in lost:
                    plan.again.append((f[0], f[1], f[2]))
            plan.forwards = kept
        if plan.again:
            self._from_storage(plan, recheck=lost)
        self._marks |= self._forward(plan)
        return plan

    def _store_together(self, s: Session, plan: _Plan) -> set[str] | None:
        """Store the plan's rows in one executemany and commit; return the ids stored, or None
        (nothing committed) when only storing them one by one can tell which the UPDATE stored:
        the database refused one, or fewer rows changed than were sent (another writer
        completed a task since ``_plan`` read it: SQLite takes no row locks)."""
        if not plan.rows:
            s.commit()
            return set()
        try:
            changed = _changed(s.execute(_STORE, plan.rows))
        except DBAPIError as exc:
            if not _is_data_error(exc):
                raise
            s.rollback()
            return None
        if changed != len(plan.rows):
            s.rollback()
            return None
        s.commit()
        return {row["tid"] for row in plan.rows}

    def _store_each(self, plan: _Plan, results: Sequence[_Part]) -> set[str]:
        """Store the rows one UPDATE each, in id order (no deadlock between two routers), and
        return the ids stored: all in one transaction, or, when the database refuses one, each
        in its own (a refused row aborts a PostgreSQL transaction); a refused one is
        dead-lettered and not forwarded."""
        rows = sorted(plan.rows, key=lambda row: str(row["tid"]))
        with self.sessions() as s:
            try:
                stored = {row["tid"] for row in rows if _changed(s.execute(_STORE, row)) == 1}
                s.commit()
                return stored
            except DBAPIError as exc:
                if not _is_data_error(exc):
                    raise
                s.rollback()
        first = {_task_id(d): d for d in reversed(results)}  # the delivery of each row
        stored = set()
        for row in rows:
            with self.sessions() as s:
                try:
                    if _changed(s.execute(_STORE, row)) == 1:
                        stored.add(row["tid"])
                    s.commit()
                except DBAPIError as exc:
                    if not _is_data_error(exc):
                        raise
                    d = first[row["tid"]]
                    plan.rejected.append((d, f"the database refused it: {exc.orig}"))
        return stored

    def _from_storage(self, plan: _Plan, recheck: set[str]) -> None:
        """Add the forwards of ``plan.again`` packed from what is stored.  Tasks in ``recheck``
        were read open: whether their stored result still needs forwarding is known only now."""
        ids = sorted({tid for _d, tid, _q in plan.again})
        with self.sessions() as s:
            stored = {t.id: t for i in range(0, len(ids), _IN_CHUNK)
                      for t in s.scalars(select(Task).where(Task.id.in_(ids[i : i + _IN_CHUNK])))}
        now = time.time()
        for d, tid, queue in plan.again:
            task = stored.get(tid)
            if task is None or task.status not in TERMINAL_STATES:
                continue  # deleted meanwhile (its owner or endpoint went): nothing left to send
            if tid in recheck and (task.forwarded or tid in self._marks):
                continue
            plan.forwards.append((d, tid, queue, self._packed(task), int(task.completion_t or now)))

    def _plan(self, s: Session, results: Sequence[_Part]) -> _Plan:
        """Decide, from the stored tasks, what each result calls for (no writes)."""
        out = _Plan()
        now = time.time()
        ids = sorted({_task_id(d) for d in results})
        # FOR UPDATE (PostgreSQL): of two service processes given the same result, the second
        # waits and then sees the task complete; locking in id order avoids deadlocks.  SQLite
        # has no row locks: _store_together finds what another writer completed meanwhile
        query = (
            select(_TASKS.c.id, _TASKS.c.owner_id, _TASKS.c.task_group_id, _TASKS.c.endpoint_id,
                   _TASKS.c.status, _TASKS.c.forwarded, _TASKS.c.completion_t, _GROUPS.c.has_queue,
                   _GROUPS.c.result_batches)
            .join(_GROUPS, _GROUPS.c.id == _TASKS.c.task_group_id)
            .where(_TASKS.c.id.in_(ids))
            .order_by(_TASKS.c.id)
            .with_for_update(of=_TASKS)
        )
        tasks = {row.id: row for row in s.execute(query)}
        seen: set[str] = set()
        for d in results:
            m = d.message
            assert m is not None and m.task_id is not None and m.data is not None  # handle() checked
            task = tasks.get(m.task_id)
            sender = _endpoint_of(d.routing_key, "results")
            if task is None or sender != task.endpoint_id:
                why = "unknown task id" if task is None else f"task belongs to endpoint {task.endpoint_id}"
                out.rejected.append((d, f"result for {m.task_id} from {sender}: {why}"))
                continue
            queue = topo.sdk_queue_prefix(task.owner_id) + task.task_group_id
            if task.result_batches:
                out.batched.add(queue)
            first = m.task_id not in seen
            seen.add(m.task_id)
            if not first or task.status in TERMINAL_STATES:
                if first and not task.forwarded and task.id not in self._marks and task.has_queue:
                    out.again.append((d, task.id, queue))  # complete but never forwarded
                # else a duplicate: stored already, forwarded already; acked with the rest
                continue
            body = d.body
            details = m.details_dict() or {}
            row = {"tid": task.id, "result": None, "exception": None, "now": now, "fwd": False}
            if len(m.data) > topo.MAX_PAYLOAD_SIZE:
                # the endpoint should have refused it; the service enforces the limit too
                text = (
                    f"MaxResultSizeExceeded: the task's result of {len(m.data)} characters "
                    f"exceeds the {topo.MAX_PAYLOAD_SIZE} character (10 MiB) limit"
                )
                details.update(error_code=ResultCode.MAX_RESULT_SIZE_EXCEEDED, error_message=text)
                row.update(status="failed", exception=text)
                body = pack_result(task.id, text, error_code=ResultCode.MAX_RESULT_SIZE_EXCEEDED,
                                   error_message=text, details=m.details_dict())
            elif m.is_error:
                details.update(error_code=m.error_code, error_message=m.error_message)
                cancelled = m.error_code == ResultCode.TASK_CANCELLED
                row.update(status="cancelled" if cancelled else "failed", exception=m.data)
            else:
                row.update(status="success", result=m.data)
            row["details"] = details
            if task.has_queue:
                out.forwards.append((d, task.id, queue, body, int(now)))
            else:
                row["fwd"] = True  # nobody streams this group; REST serves the result
            out.rows.append(row)
        return out

    @staticmethod
    def _packed(task: Task) -> bytes:
        """A stored result packed again, for a forward that must be repeated."""
        details = task.details or {}
        code, message = details.get("error_code"), details.get("error_message")
        if task.status in ("failed", "cancelled"):
            return pack_result(task.id, task.exception or "", error_code=code or ResultCode.UNKNOWN_TASK_FAILURE,
                               error_message=message or "", details=task.details)
        return pack_result(task.id, task.result or "", details=task.details)

    def _forward(self, plan: _Plan) -> set[str]:
        """Send the plan's forwards to the SDK queues; return the task ids the broker confirmed
        and note the deliveries it did not in ``plan.unconfirmed``."""
        if not plan.forwards:
            return set()
        messages, carried = self._messages(plan)
        try:
            # as the service's broker user, which the broker lets no other connection claim:
            # SDKs accept only results that carry it
            sent = self._forwarder().publish_batch(messages, user_id=broker_user_of(self.gateway.url))
        except (ConnectionError, TimeoutError) as exc:
            log.warning("could not forward %d results (%s); they will be forwarded on redelivery",
                        len(plan.forwards), exc)
            plan.unsent = [d for d, *_ in plan.forwards]
            return set()
        outcomes: list[str] = [""] * len(plan.forwards)  # a message's outcome holds for what it carries
        for outcome, indexes in zip(sent, carried, strict=True):
            for i in indexes:
                outcomes[i] = outcome
        # an unroutable forward (its queue expired or was never made) is still ACK: the
        # default exchange drops it and the SDK can fetch the result over REST
        plan.unconfirmed = [d for (d, *_), o in zip(plan.forwards, outcomes, strict=True) if o != ACK]
        return {t for (_d, t, *_), o in zip(plan.forwards, outcomes, strict=True) if o == ACK}


    @staticmethod
    def _messages(plan: _Plan) -> tuple[list[OutgoingMessage], list[list[int]]]:
        """The messages that carry the plan's forwards, and the indexes of the forwards each
        carries: one per forward, except that the forwards to a queue in ``plan.batched`` with
        the same timestamp travel as few result batches."""
        messages: list[OutgoingMessage] = []
        carried: list[list[int]] = []
        together: dict[tuple[str, int], list[int]] = {}
        for i, (_d, _t, queue, body, ts) in enumerate(plan.forwards):
            if queue in plan.batched:
                together.setdefault((queue, ts), []).append(i)
            else:
                messages.append(("", queue, body, None, ts))
                carried.append([i])
        for (queue, ts), indexes in together.items():
            start = 0
            for n, body, headers in messages_for([plan.forwards[i][3] for i in indexes]):
                messages.append(("", queue, body, headers, ts))
                carried.append(indexes[start : start + n])
                start += n
        return messages, carried


class HeartbeatListener(ConsumerLoop):
    queue = topo.HEARTBEATS_QUEUE

    def handle(self, consumer: Consumer, batch: Sequence[Delivery]) -> None:
        latest: dict[str, Any] = {}
        for d in batch:
            m = d.message
            sender = _endpoint_of(d.routing_key, "heartbeats")
            if m is None or m.kind != "ep_status_report" or m.endpoint_id is None or m.endpoint_id != sender:
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
