"""The task outbox: tasks committed but not (yet) confirmed by the broker.

A submission commits its task rows with ``published`` false and flips the flag once the broker
confirms their messages.  Whatever stays false -- the broker was down, refused the messages or
did not answer in time, or the service died between commit and publish -- is published here,
by a background thread: at start, every few seconds, and at once when asked to (after a broker
outage).  The task message is rebuilt from what is stored: the function's code, the task's
arguments (kept in ``tasks.payload`` until the task completes) and its submission's headers.

Several service processes may share a database: each publishes the outbox, so a task may be
published twice.  That is harmless (execution is at-least-once, the result router dedups by
task id); losing one is not, so a task leaves the outbox only once the broker confirmed it.

A round first finds the endpoints with tasks in the outbox (a loose scan of the outbox index,
two probes per endpoint), then takes what is due, a batch (``PAGE`` tasks) of each endpoint in
turn, each endpoint's oldest first and the endpoint waiting longest first, and goes on to an
endpoint's next batch only while the broker takes them.  An endpoint whose task queue refused
tasks (full) is left out of the rounds until its back-off (the shared schedule of
``volley.transport.reconnect``, from one interval up to ``REFUSED_MAX_S``) is over, and since
each endpoint is paged on its own range of the index, its backlog is not even walked meanwhile:
a full queue with a backlog of a million tasks costs two index probes a round and one batch and
one publish attempt per step of its back-off, not a read of the backlog and a warning per
submission every round.  A round logs one summary line, and a
stretch of failed rounds (the broker away) one line where it starts and one where it ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Row, Table, false, func, select, tuple_, update
from sqlalchemy.orm import Session, sessionmaker

from volley.protocol import topology as topo
from volley.protocol.codec import pack_result, pack_task
from volley.protocol.codes import ResultCode
from volley.protocol.outcomes import ACK
from volley.service.gateway import BrokerGateway
from volley.service.models import TERMINAL_STATES, Endpoint, Function, Submission, Task
from volley.transport.reconnect import ReconnectPolicy

log = logging.getLogger(__name__)

INTERVAL_S = 2.0
# a younger task may still be on its way with the request that made it: leave it to that one
GRACE_S = 5.0
# tasks looked at per query, and ids per IN (...) list
PAGE = 500
# payload characters held in memory at once (at least one task, however large)
PAYLOAD_BUDGET = 32 * 1024 * 1024
# the longest an endpoint whose task queue is full waits for the next try
REFUSED_MAX_S = 30.0
# endpoints remembered as refusing (one deleted meanwhile is never accepted again): past this,
# all are forgotten and tried at the next round
REFUSED_LIMIT = 10_000

_TASKS = cast(Table, Task.__table__)


def mark_published(s: Session, task_ids: Sequence[str]) -> None:
    """Take tasks out of the outbox (the caller commits): one UPDATE per chunk of ids."""
    ids = sorted(task_ids)
    for i in range(0, len(ids), PAGE):
        s.execute(update(_TASKS).where(_TASKS.c.id.in_(ids[i : i + PAGE])).values(published=True))


@dataclass(frozen=True)
class _Waiting:
    id: str
    created_at: float
    endpoint_id: str
    function_id: str
    submission_id: str | None
    status: str
    size: int  # characters of stored arguments; -1 when there are none


class Refusals:
    """Endpoints whose task queue refused tasks, each with its own back-off: a queue that is
    full now will be full at the next round too, most likely.  Used by the outbox thread only."""

    def __init__(self, policy: ReconnectPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._until: dict[str, float] = {}
        self._delays: dict[str, Iterator[float]] = {}

    def waiting(self) -> list[str]:
        """The endpoints not to try now."""
        now = self._clock()
        return sorted(e for e, until in self._until.items() if until > now)

    def __contains__(self, endpoint_id: str) -> bool:
        until = self._until.get(endpoint_id)
        return until is not None and until > self._clock()

    def refused(self, endpoint_id: str) -> float:
        """The endpoint refused tasks: leave it alone for the next delay of its back-off."""
        if endpoint_id not in self._delays and len(self._delays) >= REFUSED_LIMIT:
            self._delays.clear()
            self._until.clear()
        delays = self._delays.setdefault(endpoint_id, self.policy.delays())
        delay = self.policy.jittered(next(delays))
        self._until[endpoint_id] = self._clock() + delay
        return delay

    def accepted(self, endpoint_id: str) -> None:
        """The endpoint's queue took tasks: its back-off starts over."""
        self._delays.pop(endpoint_id, None)
        self._until.pop(endpoint_id, None)


def _waiting_endpoints(s: Session) -> list[tuple[str, float]]:
    """Each endpoint with tasks in the outbox and the creation time of its oldest, the longest
    waiting first.  A loose scan of ``ix_tasks_unpublished_endpoint``: two index probes per
    endpoint, however many tasks each holds (a GROUP BY would read every one)."""
    t = _TASKS.c

    def next_endpoint(after: Any) -> Any:
        # the order of the outbox index itself, so that the planner takes it: the index of all
        # tasks by endpoint would walk an endpoint's finished tasks to find an unpublished one
        return (select(t.endpoint_id).where(t.published == false(), t.endpoint_id > after)
                .order_by(t.endpoint_id, t.created_at, t.id).limit(1).scalar_subquery())

    # every id sorts after "" (ids are UUIDs): the first probe is a search like the others
    seed = select(next_endpoint("").label("endpoint_id")).cte("outbox_endpoints", recursive=True)
    found = seed.union_all(
        select(next_endpoint(seed.c.endpoint_id).label("endpoint_id")).where(seed.c.endpoint_id.is_not(None))
    )
    oldest = (select(t.created_at).where(t.published == false(), t.endpoint_id == found.c.endpoint_id)
              .order_by(t.created_at).limit(1).scalar_subquery())
    rows = s.execute(select(found.c.endpoint_id, oldest).where(found.c.endpoint_id.is_not(None)))
    return sorted(((e, o) for e, o in rows if o is not None), key=lambda r: (r[1], r[0]))


def _next_page(s: Session, endpoint_id: str, older_than: float,
               after: tuple[float, str] | None) -> list[_Waiting]:
    """The endpoint's next unpublished tasks in (created_at, id) order, without their
    arguments: a range of ``ix_tasks_unpublished_endpoint``."""
    t = _TASKS.c
    q = (
        select(t.id, t.created_at, t.endpoint_id, t.function_id, t.submission_id, t.status,
               func.coalesce(func.length(t.payload), -1))
        .where(t.published == false(), t.endpoint_id == endpoint_id, t.created_at < older_than)
        .order_by(t.created_at, t.id)
        .limit(PAGE)
    )
    if after is not None:
        q = q.where(tuple_(t.created_at, t.id) > tuple_(*after))
    return [_Waiting(*row) for row in s.execute(q)]


def _existing(s: Session, model: Any, ids: Iterable[str]) -> set[str]:
    wanted = sorted(set(ids))
    out: set[str] = set()
    for i in range(0, len(wanted), PAGE):
        out.update(s.scalars(select(model.id).where(model.id.in_(wanted[i : i + PAGE]))))
    return out


def _headers(s: Session, submission_ids: Iterable[str | None]) -> dict[str, Row[Any]]:
    wanted = sorted({i for i in submission_ids if i})
    out: dict[str, Row[Any]] = {}
    for i in range(0, len(wanted), PAGE):
        q = select(Submission.id, Submission.resource_specification, Submission.result_serializers,
                   Submission.max_retries_on_system_failure)
        for row in s.execute(q.where(Submission.id.in_(wanted[i : i + PAGE]))):
            out[row.id] = row
    return out


def _by_budget(tasks: Sequence[_Waiting]) -> Iterable[list[_Waiting]]:
    """Consecutive runs of tasks whose arguments together stay within the memory budget."""
    run: list[_Waiting] = []
    held = 0
    for t in tasks:
        if run and held + t.size > PAYLOAD_BUDGET:
            yield run
            run, held = [], 0
        run.append(t)
        held += max(t.size, 0)
    if run:
        yield run


class _Round:
    """One pass over what is due in the outbox; counts what it did for the log."""

    def __init__(self, gateway: BrokerGateway, sessions: sessionmaker[Session], refusals: Refusals) -> None:
        self.gateway, self.sessions = gateway, sessions
        self.refusals = refusals
        self.published = 0
        self.read = 0
        self.refused: set[str] = set()  # endpoints whose queue refused tasks in this round
        self._codes: dict[str, str] = {}

    def run(self, older_than: float) -> int:
        with self.sessions() as s:
            waiting = _waiting_endpoints(s)
        # where each due endpoint's next page starts (None: at its oldest task)
        cursors: dict[str, tuple[float, str] | None] = {
            e: None for e, oldest in waiting if oldest < older_than and e not in self.refusals
        }
        # a batch of each endpoint in turn, the one waiting longest first: a large backlog that
        # drains now does not hold up another endpoint's few tasks until the round's end
        while cursors:
            for endpoint_id, after in list(cursors.items()):
                if endpoint_id in self.refusals:  # its queue refused the last batch
                    del cursors[endpoint_id]
                    continue
                with self.sessions() as s:
                    page = _next_page(s, endpoint_id, older_than, after)
                self.read += len(page)
                if len(page) < PAGE:
                    del cursors[endpoint_id]
                else:
                    cursors[endpoint_id] = (page[-1].created_at, page[-1].id)
                if page:
                    self._codes.clear()  # bounded by the functions of one page
                    self._handle(page)
        return self.published

    def _handle(self, page: list[_Waiting]) -> None:
        with self.sessions() as s:
            endpoints = _existing(s, Endpoint, (t.endpoint_id for t in page))
            functions = _existing(s, Function, (t.function_id for t in page))
            headers = _headers(s, (t.submission_id for t in page))
        # complete already, or the endpoint was deleted (which failed its waiting tasks)
        settled = [t for t in page if t.status in TERMINAL_STATES or t.endpoint_id not in endpoints]
        done = {t.id for t in settled}
        hopeless = [t for t in page if t.id not in done and (t.function_id not in functions or t.size < 0)]
        done.update(t.id for t in hopeless)
        self._settle(settled)
        self._fail(hopeless)
        # a submission this process is publishing right now is not the outbox's (yet)
        rest = [t for t in page if t.id not in done and not self.gateway.is_publishing(t.submission_id)]
        groups: dict[tuple[str, str | None], list[_Waiting]] = {}
        for t in rest:
            groups.setdefault((t.endpoint_id, t.submission_id), []).append(t)
        for (endpoint_id, submission_id), tasks in groups.items():
            sub = headers.get(submission_id or "")
            for run in _by_budget(tasks):
                if endpoint_id in self.refusals:
                    break  # its queue refused tasks a moment ago: the rest would be refused too
                self._publish(endpoint_id, run, sub)

    def _settle(self, tasks: list[_Waiting]) -> None:
        """Tasks with nothing left to publish: complete already, or their endpoint is gone."""
        if tasks:
            with self.sessions() as s:
                mark_published(s, [t.id for t in tasks])
                s.commit()

    def _fail(self, tasks: list[_Waiting]) -> None:
        """Tasks whose message cannot be rebuilt (their function was deleted meanwhile) fail
        with an error result sent through ``results``, so the router stores and forwards it
        like any other."""
        if not tasks:
            return
        reason = "the task's function was deleted before the task could be queued"
        batch = [
            (topo.RESULTS_EXCHANGE, topo.results_routing_key(t.endpoint_id),
             pack_result(t.id, reason, error_code=ResultCode.FUNCTION_DELETED, error_message=reason), None, None)
            for t in tasks
        ]
        outcomes = self.gateway.publisher.publish_batch(batch, mandatory=True)
        done = [t.id for t, o in zip(tasks, outcomes, strict=True) if o == ACK]
        if done:
            with self.sessions() as s:
                mark_published(s, done)
                s.commit()
            log.warning("outbox: failed %d tasks whose function was deleted", len(done))

    def _publish(self, endpoint_id: str, tasks: list[_Waiting], sub: Row[Any] | None) -> None:
        with self.sessions() as s:
            query = select(_TASKS.c.id, _TASKS.c.payload).where(_TASKS.c.id.in_([t.id for t in tasks]))
            payloads: dict[str, str | None] = {row.id: row.payload for row in s.execute(query)}
            for fid in {t.function_id for t in tasks} - set(self._codes):
                self._codes[fid] = s.scalar(select(Function.code).where(Function.id == fid)) or ""
        messages = [
            (t.id, t.function_id, pack_task(t.id, self._codes[t.function_id] + payload))
            for t in tasks if (payload := payloads.get(t.id)) is not None
        ]
        del payloads
        if not messages:  # completed and cleared since the page was read
            return
        confirmed = self.gateway.publish_tasks(
            endpoint_id, messages,
            resource_specification=sub.resource_specification if sub else None,
            result_serializers=sub.result_serializers if sub else None,
            max_retries_on_system_failure=sub.max_retries_on_system_failure if sub else None,
        )
        if confirmed:
            with self.sessions() as s:
                mark_published(s, list(confirmed))
                s.commit()
            self.refusals.accepted(endpoint_id)
        self.published += len(confirmed)
        if len(confirmed) < len(messages):
            # refused (the gateway logged why): the queue is full
            self.refusals.refused(endpoint_id)
            self.refused.add(endpoint_id)


def publish_pending(gateway: BrokerGateway, sessions: sessionmaker[Session], *, older_than: float,
                    refusals: Refusals | None = None) -> int:
    """Publish the tasks in the outbox that were created before ``older_than`` and are due
    (their endpoint's queue is not known to be full), a batch at a time; return how many the
    broker confirmed.  Raises ``ConnectionError`` / ``TimeoutError`` when the broker cannot be
    reached (the rest waits for the next round)."""
    return _run_round(gateway, sessions, older_than, refusals or Refusals(_refusal_policy(INTERVAL_S)))


def _refusal_policy(interval_s: float) -> ReconnectPolicy:
    return ReconnectPolicy(first_delay=interval_s, max_delay=max(interval_s, REFUSED_MAX_S))


def _run_round(gateway: BrokerGateway, sessions: sessionmaker[Session], older_than: float,
               refusals: Refusals) -> int:
    r = _Round(gateway, sessions, refusals)
    try:
        return r.run(older_than)
    finally:
        if r.published or r.refused:
            waiting = refusals.waiting()
            log.warning(
                "outbox: published %d waiting tasks (of %d read)%s", r.published, r.read,
                f"; {len(waiting)} endpoint(s) whose task queue is full are tried again with back-off "
                f"(up to {refusals.policy.max_delay:g} s)" if waiting else "",
            )


class OutboxPublisher(threading.Thread):
    """Publishes the outbox at start and every ``interval_s``; also runs ``restore`` (see
    :mod:`volley.service.restore`) first whenever asked to, or when the broker turns out to
    have lost the service's topology -- here rather than in the consumer that noticed the
    outage, so a consumer is never held up by it and a failed restore is simply tried again."""

    def __init__(
        self,
        gateway: BrokerGateway,
        sessions: sessionmaker[Session],
        *,
        restore: Callable[[], object] | None = None,
        interval_s: float = INTERVAL_S,
        grace_s: float = GRACE_S,
    ) -> None:
        super().__init__(name="volley-outbox", daemon=True)
        self.gateway, self.sessions = gateway, sessions
        self.refusals = Refusals(_refusal_policy(interval_s))
        self._restore = restore
        self.interval_s, self.grace_s = interval_s, grace_s
        self._stop_event = threading.Event()
        self._wake = threading.Event()
        self._restore_wanted = threading.Event()
        self._failing: set[str] = set()  # stages whose last round failed
        self.rounds = 0  # rounds run, for tests and diagnostics
        self.last_round_ok = False

    def stop(self) -> None:
        self._stop_event.set()
        self._wake.set()

    def wake(self) -> None:
        """Run a round now rather than at the next interval."""
        self._wake.set()

    def request_restore(self) -> None:
        """Re-create what the broker may have lost, then publish the outbox (non-blocking:
        safe to call from a consumer's reconnect callback)."""
        self._restore_wanted.set()
        self._wake.set()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self._round()
            self.rounds += 1
            self._wake.wait(self.interval_s)
            self._wake.clear()

    def _round(self) -> None:
        try:
            self._restore_if_needed()
            _run_round(self.gateway, self.sessions, time.time() - self.grace_s, self.refusals)
        except Exception as exc:  # broker or database briefly away: the next round catches up
            self.last_round_ok = False
            self._note("publishing", exc)
            return
        self.last_round_ok = True
        self._note("publishing", None)

    def _restore_if_needed(self) -> None:
        if self._restore is None or not self._restore_needed():
            return
        self._restore_wanted.clear()
        try:
            self._restore()
        except (ConnectionError, TimeoutError):
            self._restore_wanted.set()
            raise  # the broker is away: there is nothing to publish to either
        except Exception as exc:  # its management API, say: publishing may still work
            self._restore_wanted.set()
            self._note("restoring the broker's set-up", exc)
            return
        self._note("restoring the broker's set-up", None)

    def _restore_needed(self) -> bool:
        """Asked for, or the broker has no ``results`` queue: a node that lost its state.  The
        result router cannot even resume consuming then, so it cannot be the one to ask."""
        return self._restore_wanted.is_set() or not self.gateway.queue_exists(topo.RESULTS_QUEUE)

    def _note(self, stage: str, exc: Exception | None) -> None:
        """Log where a stretch of failures of ``stage`` starts and ends, not every round."""
        failing = stage in self._failing
        if exc is not None and not failing:
            self._failing.add(stage)
            unexpected = not isinstance(exc, ConnectionError | TimeoutError)
            log.warning("outbox: %s failed (%s: %s); retrying every %.0f s", stage,
                        type(exc).__name__, exc, self.interval_s, exc_info=unexpected)
        elif exc is None and failing:
            self._failing.discard(stage)
            log.warning("outbox: %s works again", stage)
