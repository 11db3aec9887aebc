"""The result router against writers that complete a task between its read and its UPDATE.

SQLite takes no row locks, so a cancel (or a second service process storing another result)
can commit between the router's read of a task and its conditional UPDATE.  The router must
then forward what is stored, never the result that lost.  The competing write is made to land
exactly there: a listener on the router's engine runs it from inside the router, just before
the router's UPDATE of that task.  On PostgreSQL the router holds the task's row lock, so the
competitor waits on it (the listener sees it waiting) and commits only after the router.

The listener sits on an engine of its own, which the running router is handed for the race:
adding a listener to an engine other threads are using can break their statements under way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import sessionmaker

from service_helpers import (
    Service,
    User,
    endpoint_publish_result,
    result_body,
    sdk_queue,
    serializer,
    tenant_with_tasks,
    wait_for,
)
from volley.protocol.messages import decode
from volley.service.db import make_engine
from volley.service.models import Task
from volley.service.router import ResultRouter

pytest_plugins = ["service_fixtures"]


def _router(svc: Service) -> ResultRouter:
    (router,) = [t for t in svc.client.app.state.volley_threads if isinstance(t, ResultRouter)]
    return router


@contextmanager
def just_before_the_routers_update(svc: Service, task_id: str, compete: Callable[[], None]) -> Iterator[list[str]]:
    """While inside, the router's first UPDATE of ``task_id`` first runs ``compete`` in a thread
    of its own and waits for it to commit (SQLite) or to wait on the router's row lock
    (PostgreSQL).  Yields a list that says, once the race has run, which of the two it was."""
    router = _router(svc)
    engine = make_engine(svc.database_url)
    watcher = sa.create_engine(svc.database_url, poolclass=sa.pool.NullPool) if svc.backend == "postgresql" else None
    outcome: list[str] = []
    done = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            compete()
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)
        finally:
            done.set()

    def waits_on_lock() -> bool:
        assert watcher is not None
        with watcher.connect() as conn:
            return bool(conn.scalar(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )))

    def before(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if outcome:
            return
        if not statement.lstrip().startswith("UPDATE tasks SET status") or task_id not in repr(parameters):
            return
        outcome.append("started")
        threading.Thread(target=run, name="competing-writer", daemon=True).start()
        finished = wait_for(lambda: "committed" if done.is_set() else
                            "waited on the router's lock" if watcher is not None and waits_on_lock() else None,
                            what="the competing write to commit or to wait on the router's lock")
        outcome[:] = [finished]

    sa.event.listen(engine, "before_cursor_execute", before)
    sessions = router.sessions
    router.sessions = sessionmaker(engine, expire_on_commit=False)
    try:
        yield outcome
        wait_for(done.is_set, what="the competing write to finish")
        if errors:
            raise errors[0]
    finally:
        router.sessions = sessions
        engine.dispose()
        if watcher is not None:
            watcher.dispose()


def _as_stored(doc: dict[str, Any], body: bytes) -> bool:
    """Whether a forwarded result says what the task's stored state says."""
    m = decode(body)
    if doc["status"] == "success":
        return not m.is_error and serializer.deserialize(m.data) == serializer.deserialize(doc["result"])
    if doc["status"] == "cancelled":
        return m.is_error and m.error_code == "TaskCancelled"
    return m.is_error and m.data == doc["exception"]


def _forwards_of(svc: Service, user: User, group: str, task_id: str) -> list[bytes]:
    return [b for _m, _p, b in svc.broker.drain(sdk_queue(user, group)) if decode(b).task_id == task_id]


def test_a_cancel_committed_between_read_and_update_wins_and_the_sdk_sees_only_it(svc: Service) -> None:
    """Cancel vs. result: the cancel commits after the router read the task open and before its
    UPDATE.  The SDK must get what the service stores -- the cancel -- and not the result."""
    alice, reg, out, (t1, sentinel) = tenant_with_tasks(svc, 2)
    with svc.state.sessions() as s:
        # back in the outbox, where a cancel claims it in the database; kept out of the outbox
        # publisher's reach (it leaves tasks younger than a few seconds alone)
        s.execute(sa.update(Task).where(Task.id == t1).values(published=False, created_at=time.time() + 3600))
        s.commit()

    answers: list[dict[str, Any]] = []

    def cancel() -> None:
        r = svc.client.post("/v2/tasks/cancel", json={"task_ids": [t1]}, headers=alice.headers)
        assert r.status_code == 200, r.text
        answers.append(r.json()["results"])

    with just_before_the_routers_update(svc, t1, cancel) as race:
        endpoint_publish_result(svc, reg, result_body(t1, 1))
        wait_for(lambda: svc.task(alice, t1)["status"] != "waiting-for-ep", what="t1 to complete")
    endpoint_publish_result(svc, reg, result_body(sentinel, "sentinel"))
    wait_for(lambda: svc.task(alice, sentinel)["status"] == "success", what="the sentinel result")

    doc = svc.task(alice, t1)
    if svc.backend == "sqlite":
        assert race == ["committed"] and answers == [{t1: "cancelled"}]
        assert doc["status"] == "cancelled"
    else:
        assert race == ["waited on the router's lock"] and answers == [{t1: "requested"}]
        assert doc["status"] == "success"
    forwards = _forwards_of(svc, alice, out["task_group_id"], t1)
    assert forwards, "nothing was forwarded for t1"
    assert [_as_stored(doc, b) for b in forwards] == [True] * len(forwards), (doc["status"], forwards)


def test_a_result_stored_by_another_router_between_read_and_update_is_the_one_forwarded(svc: Service) -> None:
    """Two service processes given two different results of one task (a re-run): the one whose
    UPDATE stored it wins, and the SDK never gets the other."""
    from volley.transport.base import PikaDelivery

    alice, reg, out, (t1, sentinel) = tenant_with_tasks(svc, 2)
    rk = reg["result_queue_info"]["queue_publish_kwargs"]["routing_key"]
    other = ResultRouter(svc.state.gateway, svc.state.sessions)  # the other process's router
    late = result_body(t1, error="a re-run failed")

    def store_the_other_result() -> None:
        other._route([PikaDelivery(1, False, "results", rk, None, {}, late, decode(late), None)])  # type: ignore[list-item]

    with just_before_the_routers_update(svc, t1, store_the_other_result) as race:
        endpoint_publish_result(svc, reg, result_body(t1, 1))
        wait_for(lambda: svc.task(alice, t1)["status"] != "waiting-for-ep", what="t1 to complete")
    endpoint_publish_result(svc, reg, result_body(sentinel, "sentinel"))
    wait_for(lambda: svc.task(alice, sentinel)["status"] == "success", what="the sentinel result")

    doc = svc.task(alice, t1)
    expected = ("committed", "failed") if svc.backend == "sqlite" else ("waited on the router's lock", "success")
    assert (race[0], doc["status"]) == expected
    forwards = _forwards_of(svc, alice, out["task_group_id"], t1)
    assert forwards, "nothing was forwarded for t1"
    assert [_as_stored(doc, b) for b in forwards] == [True] * len(forwards), (doc["status"], forwards)


def test_without_a_competitor_a_batch_is_stored_in_one_statement(svc: Service) -> None:
    """The check costs nothing when nobody competes: one executemany stores the whole batch."""
    from volley.transport.base import PikaDelivery

    alice, reg, out, ids = tenant_with_tasks(svc, 3)
    rk = reg["result_queue_info"]["queue_publish_kwargs"]["routing_key"]
    engine = make_engine(svc.database_url)
    updates: list[bool] = []

    def count(_c: Any, _cur: Any, statement: str, _p: Any, _ctx: Any, many: bool) -> None:
        if statement.startswith("UPDATE tasks SET status"):
            updates.append(many)

    sa.event.listen(engine, "before_cursor_execute", count)
    bodies = [result_body(t, i) for i, t in enumerate(ids)]
    try:
        ResultRouter(svc.state.gateway, sessionmaker(engine, expire_on_commit=False))._route(
            [PikaDelivery(i, False, "results", rk, None, {}, b, decode(b), None) for i, b in enumerate(bodies)]  # type: ignore[misc]
        )
    finally:
        engine.dispose()
    assert updates == [True]
    assert [serializer.deserialize(svc.task(alice, t)["result"]) for t in ids] == [0, 1, 2]
    assert len(svc.broker.drain(sdk_queue(alice, out["task_group_id"]))) == 3
