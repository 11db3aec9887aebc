"""The outbox's rounds stay small however large its backlog: with K submissions waiting (the
broker down, or an endpoint's task queue full and refusing them), one round reads at most a
batch of them and logs O(1) lines, not a query and two warnings per submission every 2 s.  And
the per-user cap on queued tasks: past it, a submission is answered 429 naming the limit and
its setting, stores nothing, and the SDK waits it out.

A real service on SQLite and PostgreSQL, the session's real broker (through a TCP relay that the
test stops, for the outage); the service's SQL is counted at the database engine.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from service_helpers import (
    BrokerHost,
    Service,
    TcpRelay,
    backend_of,
    relayed_settings,
    run_service,
    start_service,
    task_payload,
    wait_for,
)
from volley.service.models import Submission, Task
from volley.service.outbox import PAGE, OutboxPublisher

pytest_plugins = ["service_fixtures"]

K = 60  # waiting submissions, one task each


def _outbox(svc: Service) -> OutboxPublisher:
    return next(t for t in svc.client.app.state.volley_threads if isinstance(t, OutboxPublisher))


class RoundWatch:
    """SQL statements and log lines of the outbox thread, by the round they belong to."""

    def __init__(self, svc: Service) -> None:
        self.outbox = _outbox(svc)
        self.engine = svc.state.sessions.kw["bind"]
        self.statements: Counter[int] = Counter()
        self.lines: dict[int, list[str]] = {}
        self.tasks_read: Counter[int] = Counter()
        self._handler = logging.Handler()
        self._handler.emit = self._log  # type: ignore[method-assign]

    def _round(self) -> int | None:
        if threading.current_thread() is not self.outbox:
            return None
        return self.outbox.rounds  # the round under way is the next one counted

    def _sql(self, _conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        r = self._round()
        if r is not None:
            self.statements[r] += 1

    def _rows(self, _conn: Any, _clause: Any, _params: Any, _opts: Any, result: Any) -> None:
        r = self._round()
        if r is not None and result.returns_rows and "FROM tasks" in str(_clause):
            self.tasks_read[r] += 1

    def _log(self, record: logging.LogRecord) -> None:
        r = self._round()
        if r is not None and record.levelno >= logging.INFO:
            self.lines.setdefault(r, []).append(record.getMessage())

    def __enter__(self) -> RoundWatch:
        sa.event.listen(self.engine, "before_cursor_execute", self._sql)
        logging.getLogger("volley").addHandler(self._handler)
        return self

    def __exit__(self, *_exc: Any) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._sql)
        logging.getLogger("volley").removeHandler(self._handler)

    def complete_rounds(self, n: int) -> list[int]:
        """Wait until ``n`` whole rounds ran under watch; their numbers."""
        first = self.outbox.rounds + 1  # the one under way now may have begun unwatched
        self.outbox.wake()
        wait_for(lambda: self.outbox.rounds >= first + n, timeout=60, what=f"{n} outbox rounds")
        return list(range(first, first + n))


def _backdate(svc: Service, user_id: str) -> None:
    """Make the waiting tasks old enough for the outbox at once (it leaves young ones to the
    request that made them)."""
    with svc.state.sessions() as s:
        s.execute(sa.update(Task).where(Task.owner_id == user_id).values(created_at=Task.created_at - 60))
        s.commit()


def _submit_each(svc: Service, user: Any, ep: str, fid: str, n: int) -> list[str]:
    ids = []
    for i in range(n):
        ids += svc.submit(user, ep, fid, (i,), create_queue=False)["tasks"][fid]
    return ids


def _assert_small(watch: RoundWatch, rounds: list[int]) -> None:
    for r in rounds:
        # a batch of the backlog is a handful of queries, whatever K is; and one line, not 2 K
        assert watch.statements[r] <= 12, (r, watch.statements)
        assert len(watch.lines.get(r, [])) <= 2, (r, watch.lines.get(r))


def test_rounds_with_a_full_task_queue_touch_a_batch_and_log_a_line(
    broker_host: BrokerHost, fresh_db: str
) -> None:
    broker = broker_host.new_vhost()
    with contextmanager(start_service)(broker, fresh_db, backend_of(fresh_db), task_queue_max_length=1) as svc:
        alice = svc.new_user()
        fid, ep = svc.register_function(alice), svc.register_endpoint(alice)["endpoint_id"]
        ids = _submit_each(svc, alice, ep, fid, K + 1)  # the first fills the queue; K wait
        assert svc.count(Task, owner_id=alice.id, published=False) == K
        _backdate(svc, alice.id)
        with RoundWatch(svc) as watch:
            rounds = watch.complete_rounds(4)
        _assert_small(watch, rounds)
        assert svc.broker.queue_depth(f"{ep}.tasks") == 1
        assert svc.count(Task, owner_id=alice.id, published=False) == K  # nothing lost or doubled
        # the endpoint takes its task: the outbox fills the queue again, oldest first
        first = [p.headers["task_uuid"] for _m, p, _b in svc.broker.drain(f"{ep}.tasks")]
        wait_for(lambda: svc.broker.queue_depth(f"{ep}.tasks") == 1, timeout=60, what="the outbox to refill")
        second = [p.headers["task_uuid"] for _m, p, _b in svc.broker.drain(f"{ep}.tasks")]
        assert first + second == ids[:2]
        assert svc.count(Task, owner_id=alice.id, published=False) == K - 1


def test_rounds_during_a_broker_outage_touch_a_batch_and_log_a_line(
    broker_host: BrokerHost, relay: TcpRelay, fresh_db: str
) -> None:
    broker = broker_host.new_vhost()
    settings = relayed_settings(broker, fresh_db, relay)
    with contextmanager(run_service)(settings, broker, backend_of(fresh_db)) as svc:
        alice = svc.new_user()
        fid, ep = svc.register_function(alice), svc.register_endpoint(alice)["endpoint_id"]
        relay.stop()
        ids = _submit_each(svc, alice, ep, fid, K)
        _backdate(svc, alice.id)
        with RoundWatch(svc) as watch:
            rounds = watch.complete_rounds(4)
        _assert_small(watch, rounds)
        relay.start()
        wait_for(lambda: svc.count(Task, owner_id=alice.id, published=False) == 0, timeout=60,
                 what="the outbox to publish the backlog")
        taken = [p.headers["task_uuid"] for _m, p, _b in svc.broker.drain(f"{ep}.tasks")]
        assert Counter(taken) == Counter(ids)


def test_the_backlog_is_published_in_batches_not_all_in_one_read(
    broker_host: BrokerHost, relay: TcpRelay, fresh_db: str
) -> None:
    """After an outage, a backlog larger than a batch is published a batch at a time, each
    batch right after the last (not one per interval), oldest first."""
    broker = broker_host.new_vhost()
    settings = relayed_settings(broker, fresh_db, relay)
    with contextmanager(run_service)(settings, broker, backend_of(fresh_db)) as svc:
        alice = svc.new_user()
        fid, ep = svc.register_function(alice), svc.register_endpoint(alice)["endpoint_id"]
        relay.stop()
        ids: list[str] = []
        for size in (PAGE, PAGE, 7):
            ids += svc.submit(alice, ep, fid, *[(i,) for i in range(size)], create_queue=False)["tasks"][fid]
        _backdate(svc, alice.id)
        relay.start()
        outbox = _outbox(svc)
        before = outbox.rounds
        wait_for(lambda: svc.count(Task, owner_id=alice.id, published=False) == 0, timeout=60,
                 what="the outbox to publish the backlog")
        assert outbox.rounds - before <= 2  # the three batches went in one round, not three
        taken = [p.headers["task_uuid"] for _m, p, _b in svc.broker.drain(f"{ep}.tasks")]
        assert Counter(taken) == Counter(ids)
        # oldest submission first (within one, tasks share their creation time)
        assert set(taken[:PAGE]) == set(ids[:PAGE])


# --- the per-user cap on queued tasks -------------------------------------------------------------
@pytest.fixture()
def capped(broker_host: BrokerHost, relay: TcpRelay, fresh_db: str) -> Iterator[Service]:
    broker = broker_host.new_vhost()
    settings = relayed_settings(broker, fresh_db, relay, max_queued_tasks_per_user=5)
    yield from run_service(settings, broker, backend_of(fresh_db))


def test_submissions_past_the_queued_task_cap_are_429_and_store_nothing(capped: Service, relay: TcpRelay) -> None:
    svc = capped
    alice, bob = svc.new_user(), svc.new_user()
    fid, ep = svc.register_function(alice), svc.register_endpoint(alice)["endpoint_id"]
    bob_fid, bob_ep = svc.register_function(bob), svc.register_endpoint(bob)["endpoint_id"]
    relay.stop()
    svc.submit(alice, ep, fid, *[(i,) for i in range(4)], create_queue=False)  # 4 of 5 wait
    body = {"create_queue": False, "tasks": {fid: [task_payload(i) for i in range(2)]}}
    r = svc.client.post(f"/v3/endpoints/{ep}/submit", json=body, headers=alice.headers)
    assert r.status_code == 429, r.text
    assert r.json()["code"] == "OUTBOX_FULL", r.json()
    message = r.json()["message"]
    assert "4 tasks" in message and "5" in message and "max_queued_tasks_per_user" in message, message
    assert int(r.headers["Retry-After"]) >= 1
    assert svc.count(Task, owner_id=alice.id) == 4 and svc.count(Submission, owner_id=alice.id) == 1
    # up to the cap is fine, and the cap is per user: bob is not held up by alice's backlog
    svc.submit(alice, ep, fid, (9,), create_queue=False)
    svc.submit(bob, bob_ep, bob_fid, *[(i,) for i in range(5)], create_queue=False)
    relay.start()
    wait_for(lambda: svc.count(Task, published=False) == 0, timeout=60, what="the outbox to drain")
    # queued again: room for more
    svc.submit(alice, ep, fid, *[(i,) for i in range(5)], create_queue=False)


def _identity(x: Any) -> Any:
    return x


def test_the_sdk_waits_out_a_full_outbox_and_its_submission_goes_through(
    broker_host: BrokerHost, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A real SDK over real HTTP: a submission answered 429 is sent again with back-off, and goes
    through once the endpoint took tasks and the outbox has room; nothing is stored twice."""
    from served_service import served
    from service_helpers import _service_settings
    from volley.sdk.client import Client
    from volley.service.auth import create_token

    broker = broker_host.new_vhost()
    settings = _service_settings(broker, f"sqlite:///{tmp_path / 'served.db'}", task_queue_max_length=2,
                                 max_queued_tasks_per_user=5)
    with served(settings) as (url, state):
        with state.sessions() as s:
            uid, token = create_token(s, "alice")
        client = Client(service_url=url, token=token, ca_file=broker.info.ca_file)
        ep = client.register_endpoint("ep")["endpoint_id"]
        fid = client.register_function(_identity)

        def run(n: int) -> dict[str, Any]:
            batch = client.create_batch()
            for i in range(n):
                batch.add(fid, args=(i,))
            return client.batch_run(ep, batch)

        run(5)  # two in the endpoint's queue, three in the outbox
        answer: dict[str, Any] = {}
        waiting = threading.Thread(target=lambda: answer.update(run(3)), daemon=True)
        with caplog.at_level(logging.WARNING, logger="volley.sdk.http"):
            waiting.start()
            wait_for(lambda: any("429" in r.getMessage() for r in caplog.records), timeout=30,
                     what="the SDK to be told 429")
        assert not answer and waiting.is_alive()
        queue = f"{ep}.tasks"
        taken = [p.headers["task_uuid"] for _m, p, _b in broker.drain(queue)]  # the endpoint takes two
        waiting.join(timeout=120)
        assert not waiting.is_alive() and len(answer["tasks"][fid]) == 3, answer

        def all_taken() -> bool:
            taken.extend(p.headers["task_uuid"] for _m, p, _b in broker.drain(queue))
            return len(taken) >= 8

        wait_for(all_taken, timeout=120, what="the endpoint to get every task")
        with state.sessions() as s:
            stored = list(s.scalars(sa.select(Task.id).where(Task.owner_id == uid)))
        assert sorted(taken) == sorted(stored) and len(stored) == 8  # each once


# --- a blocked endpoint's backlog costs a round nothing -------------------------------------------
BLOCKED_K = 10 * PAGE  # tasks waiting for one endpoint whose task queue is full


class QueryCost:
    """What the database says each of the outbox thread's reads of ``tasks`` cost, asked on the
    same connection just before the read runs: PostgreSQL's ``EXPLAIN (ANALYZE, BUFFERS)`` rows
    (returned, and walked then filtered out), SQLite's ``EXPLAIN QUERY PLAN`` (it counts nothing)."""

    def __init__(self, watch: RoundWatch, backend: str) -> None:
        self.watch, self.backend = watch, backend
        self.rows: Counter[int] = Counter()
        self.indexes: set[str] = set()
        self.plans: dict[int, list[tuple[str, list[str]]]] = {}

    def _sql(self, _conn: Any, cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        r = self.watch._round()
        if r is None or not statement.lstrip().upper().startswith(("SELECT", "WITH")) or "tasks" not in statement:
            return
        cur = cursor.connection.cursor()
        try:
            if self.backend == "postgresql":
                cur.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, parameters)
                plan = cur.fetchone()[0][0]["Plan"]
                self.rows[r] += _rows_touched(plan)
                self.indexes.update(_ways_in(plan))
            else:
                cur.execute("EXPLAIN QUERY PLAN " + statement, parameters)
                self.plans.setdefault(r, []).append((statement, [row[3] for row in cur.fetchall()]))
        finally:
            cur.close()

    def __enter__(self) -> QueryCost:
        sa.event.listen(self.watch.engine, "before_cursor_execute", self._sql)
        return self

    def __exit__(self, *_exc: Any) -> None:
        sa.event.remove(self.watch.engine, "before_cursor_execute", self._sql)


def _scans(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The plan's reads of ``tasks`` (a bitmap's index part is counted by its heap part)."""
    if node.get("Relation Name") == "tasks":
        yield node
    for child in node.get("Plans", []):
        yield from _scans(child)


def _ways_in(node: dict[str, Any]) -> Iterator[str]:
    """The indexes a plan reads tasks through ("Seq Scan" for a read of the whole table)."""
    if node.get("Index Name"):
        yield node["Index Name"]
    elif node.get("Relation Name") == "tasks" and node["Node Type"] == "Seq Scan":
        yield "Seq Scan"
    for child in node.get("Plans", []):
        yield from _ways_in(child)


def _rows_touched(plan: dict[str, Any]) -> int:
    """Rows of tasks the plan's scans returned, or read and threw away, over all their loops."""
    return sum(int((n.get("Actual Rows", 0) + n.get("Rows Removed by Filter", 0)
                    + n.get("Rows Removed by Index Recheck", 0)) * n.get("Actual Loops", 1)) for n in _scans(plan))


# a read of tasks bounded by what it looks for: a range of one endpoint's outbox entries (the
# distinct-endpoint step ``endpoint_id>?`` is a LIMIT 1 probe), or tasks by id
_BOUNDED = ("USING INDEX ix_tasks_unpublished_endpoint (endpoint_id=?",
            "USING COVERING INDEX ix_tasks_unpublished_endpoint (endpoint_id=?",
            "USING INDEX ix_tasks_unpublished_endpoint (endpoint_id>?)",
            "USING COVERING INDEX ix_tasks_unpublished_endpoint (endpoint_id>?)",
            "USING INDEX sqlite_autoindex_tasks_1 (id=?)")
HISTORY = 10  # finished tasks of the blocked endpoint per waiting one


def _add_history(svc: Service, endpoint_id: str) -> None:
    """Give the blocked endpoint HISTORY finished tasks per waiting one, as a service's table
    holds (results are kept for days), and let PostgreSQL's statistics see the table as its
    autovacuum would: plans then are those of a service that has run a while."""
    new_id = "gen_random_uuid()::text" if svc.backend == "postgresql" else "lower(hex(randomblob(16)))"
    copies = ("generate_series(1, :n) AS n" if svc.backend == "postgresql"
              else "(WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < :n) SELECT i FROM c)")
    with svc.state.sessions() as s:
        s.execute(sa.text(
            "INSERT INTO tasks (id, owner_id, task_group_id, endpoint_id, function_id, status, forwarded,"
            " created_at, updated_at, completion_t, submission_id, published)"
            f" SELECT {new_id}, owner_id, task_group_id, endpoint_id, function_id, 'success', :yes,"
            f" created_at - 3600, updated_at, created_at - 3500, submission_id, :yes FROM tasks, {copies}"
            " WHERE endpoint_id = :ep AND published = :no"), {"n": HISTORY, "ep": endpoint_id, "yes": True, "no": False})
        s.commit()
    if svc.backend == "postgresql":
        with svc.state.sessions.kw["bind"].connect() as conn:
            conn.exec_driver_sql("ANALYZE tasks")
            conn.commit()


def test_a_blocked_endpoints_backlog_is_not_walked_by_every_round(
    broker_host: BrokerHost, fresh_db: str
) -> None:
    """One endpoint's task queue is full with BLOCKED_K tasks waiting for it; another's task is in
    the outbox too.  Every round publishes the other's task and reads O(batch) rows of ``tasks``,
    not the blocked backlog: by PostgreSQL's own row counts, and on SQLite by a plan that searches
    tasks only by endpoint or id."""
    backend = backend_of(fresh_db)
    broker = broker_host.new_vhost()
    with contextmanager(start_service)(broker, fresh_db, backend, task_queue_max_length=1) as svc:
        alice = svc.new_user()
        fid = svc.register_function(alice)
        blocked, free = (svc.register_endpoint(alice)["endpoint_id"] for _ in range(2))
        svc.submit(alice, blocked, fid, (0,), create_queue=False)  # fills its queue
        for _ in range(BLOCKED_K // PAGE):
            svc.submit(alice, blocked, fid, *[(i,) for i in range(PAGE)], create_queue=False)
        assert svc.count(Task, endpoint_id=blocked, published=False) == BLOCKED_K
        (other,) = svc.submit(alice, free, fid, (0,), create_queue=False)["tasks"][fid]
        svc.broker.drain(f"{free}.tasks")
        # as if the service had died between its commit and the broker's confirm
        with svc.state.sessions() as s:
            s.execute(sa.update(Task).where(Task.id == other).values(published=False))
            s.commit()
        _backdate(svc, alice.id)
        _add_history(svc, blocked)
        with RoundWatch(svc) as watch, QueryCost(watch, backend) as cost:
            rounds = watch.complete_rounds(4)
        _assert_small(watch, rounds)
        assert svc.count(Task, id=other, published=True) == 1
        assert [p.headers["task_uuid"] for _m, p, _b in svc.broker.drain(f"{free}.tasks")] == [other]
        assert svc.count(Task, endpoint_id=blocked, published=False) == BLOCKED_K
        assert svc.count(Task, endpoint_id=blocked) == (HISTORY + 1) * BLOCKED_K + 1
        if backend == "postgresql":
            # a round that tries the blocked endpoint reads one batch of it (and its arguments)
            assert all(cost.rows[r] <= 3 * PAGE for r in rounds), (cost.rows, rounds)
            # the outbox's own index, or tasks by id: neither walks the blocked backlog nor history
            assert cost.indexes <= {"ix_tasks_unpublished_endpoint", "tasks_pkey"}, cost.indexes
        else:
            for r in rounds:
                for statement, plan in cost.plans.get(r, []):
                    searches = [d for d in plan if " tasks " in f"{d} "]
                    assert searches and all(d.startswith("SEARCH") and any(b in d for b in _BOUNDED)
                                            for d in searches), (statement, plan)
