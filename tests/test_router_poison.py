"""A message on ``results`` that the router cannot settle is tried MAX_TRIES times, then
dead-lettered, while every other tenant's results go on past it.

Two kinds, each made for real: a result whose forward the broker refuses every time (the task
group's queue was declared beforehand by someone else, bounded to nothing and refusing
publishes: the service keeps such a queue as it is), and a message whose handling raises every
time (a duplicate result of a task whose stored row the router cannot pack again).  The router
consumes one queue in order, so once results published after the poison are stored, the
poison has been handled at least once too.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from service_helpers import (
    BACKENDS,
    BrokerHost,
    Service,
    endpoint_publish_batch,
    endpoint_publish_result,
    new_uuid,
    result_body,
    sdk_queue,
    serializer,
    start_service,
    tenant_with_tasks,
    wait_for,
)
from volley.protocol import topology as topo
from volley.protocol.messages import decode
from volley.service.models import Task
from volley.service.router import MAX_TRIES, ResultRouter

pytest_plugins = ["service_fixtures"]


def _dead_letters(svc: Service, body: bytes) -> list[bytes]:
    """Wait until ``body`` is in the dead-letter queue; return everything taken from it."""
    taken: list[bytes] = []

    def arrived() -> bool:
        taken.extend(b for _m, _p, b in svc.broker.drain(topo.DEAD_LETTER_QUEUE))
        return body in taken

    wait_for(arrived, what="the poison message in the dead-letter queue")
    return taken


def _router_lines(caplog: pytest.LogCaptureFixture, routing_key: str, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "volley.service.router" and routing_key in r.getMessage() and text in r.getMessage()]


def test_a_result_whose_forward_is_always_refused_is_dead_lettered_after_max_tries(
    svc: Service, caplog: pytest.LogCaptureFixture,
) -> None:
    svc.broker.drain(topo.DEAD_LETTER_QUEUE)
    caplog.set_level(logging.INFO, logger="volley.service.router")
    alice = svc.new_user()
    group = new_uuid()
    conn = svc.broker.connect()
    try:  # an operator's queue for alice's group, refusing everything
        conn.channel().queue_declare(sdk_queue(alice, group), durable=True,
                                     arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
    finally:
        conn.close()
    fid = svc.register_function(alice)
    reg = svc.register_endpoint(alice)
    (t1,) = svc.submit(alice, reg["endpoint_id"], fid, (1,), task_group_id=group)["tasks"][fid]
    svc.broker.drain(f"{reg['endpoint_id']}.tasks")
    bob, bob_reg, bob_out, bob_ids = tenant_with_tasks(svc, 3)

    poison = result_body(t1, 1)
    endpoint_publish_result(svc, reg, poison)
    for i, tid in enumerate(bob_ids):
        endpoint_publish_result(svc, bob_reg, result_body(tid, i))

    assert _dead_letters(svc, poison) == [poison]
    # the others went on: stored and forwarded
    wait_for(lambda: all(svc.task(bob, t)["status"] == "success" for t in bob_ids), what="bob's results")
    forwarded = svc.broker.drain(sdk_queue(bob, bob_out["task_group_id"]))
    assert [decode(b).task_id for _m, _p, b in forwarded] == bob_ids
    # the refused forward's result is stored all the same: REST serves it
    doc = svc.task(alice, t1)
    assert doc["status"] == "success" and serializer.deserialize(doc["result"]) == 1
    rk = topo.results_routing_key(reg["endpoint_id"])
    assert len(_router_lines(caplog, rk, "goes back to the queue")) == MAX_TRIES - 1
    (line,) = _router_lines(caplog, rk, "dead-lettering")
    assert "refused" in line and f"failed {MAX_TRIES} times" in line and "REST serves it" in line
    assert svc.broker.queue_depth(topo.RESULTS_QUEUE) == 0


def test_a_result_batch_with_a_refused_forward_keeps_the_rest_and_is_dead_lettered_once(svc: Service) -> None:
    """A batch message (one endpoint, two task groups) whose forward into one group is always
    refused: the other group's result is stored and forwarded once, however often the batch
    comes back, and the batch ends in the dead-letter queue."""
    svc.broker.drain(topo.DEAD_LETTER_QUEUE)
    alice = svc.new_user()
    refusing = new_uuid()
    conn = svc.broker.connect()
    try:
        conn.channel().queue_declare(sdk_queue(alice, refusing), durable=True,
                                     arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
    finally:
        conn.close()
    fid = svc.register_function(alice)
    reg = svc.register_endpoint(alice)
    (t1,) = svc.submit(alice, reg["endpoint_id"], fid, (1,), task_group_id=refusing)["tasks"][fid]
    fine = svc.submit(alice, reg["endpoint_id"], fid, (2,))
    (t2,) = fine["tasks"][fid]
    svc.broker.drain(f"{reg['endpoint_id']}.tasks")

    body = endpoint_publish_batch(svc, reg, [result_body(t1, 1), result_body(t2, 2)])
    assert _dead_letters(svc, body) == [body]
    assert [svc.task(alice, t)["status"] for t in (t1, t2)] == ["success", "success"]
    assert [decode(b).task_id for _m, _p, b in svc.broker.drain(sdk_queue(alice, fine["task_group_id"]))] == [t2]
    assert svc.broker.queue_depth(topo.RESULTS_QUEUE) == 0


def test_a_message_whose_handling_always_raises_is_dead_lettered_and_blocks_nobody(
    svc: Service, caplog: pytest.LogCaptureFixture,
) -> None:
    alice, reg, out, (t1,) = tenant_with_tasks(svc, 1)
    first = result_body(t1, 1)
    endpoint_publish_result(svc, reg, first)

    def marked() -> bool:
        with svc.state.sessions() as s:
            return s.get(Task, t1).forwarded is True

    wait_for(marked, what="t1 to be stored and marked forwarded")
    with svc.state.sessions() as s:
        # a stored row the router cannot pack again (details of an unexpected shape), and not
        # forwarded: every duplicate of its result makes the router try, and fail
        task = s.get(Task, t1)
        task.details, task.forwarded = [1], False
        s.commit()
    svc.broker.drain(sdk_queue(alice, out["task_group_id"]))
    svc.broker.drain(topo.DEAD_LETTER_QUEUE)
    caplog.set_level(logging.INFO, logger="volley.service.router")
    bob, bob_reg, bob_out, bob_ids = tenant_with_tasks(svc, 3)

    poison = result_body(t1, 999)  # a re-run's duplicate
    endpoint_publish_result(svc, reg, poison)
    for i, tid in enumerate(bob_ids):
        endpoint_publish_result(svc, bob_reg, result_body(tid, i))

    wait_for(lambda: all(svc.task(bob, t)["status"] == "success" for t in bob_ids), what="bob's results")
    forwarded = svc.broker.drain(sdk_queue(bob, bob_out["task_group_id"]))
    assert [decode(b).task_id for _m, _p, b in forwarded] == bob_ids
    assert _dead_letters(svc, poison) == [poison]
    rk = topo.results_routing_key(reg["endpoint_id"])
    assert len(_router_lines(caplog, rk, "goes back to the queue")) == MAX_TRIES - 1
    (line,) = _router_lines(caplog, rk, "dead-lettering")
    assert "AttributeError" in line and f"failed {MAX_TRIES} times" in line
    assert svc.broker.queue_depth(topo.RESULTS_QUEUE) == 0
    with svc.state.sessions() as s:  # the first result stands (REST cannot show this row)
        assert serializer.deserialize(s.get(Task, t1).result) == 1


@pytest.fixture(params=BACKENDS)
def impatient_svc(request: pytest.FixtureRequest, broker_host: BrokerHost, tmp_path: Path) -> Iterator[Service]:
    """A service of its own that waits at most 0.2 s for a database lock."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'service.db'}?timeout=0.2"
    else:
        url = request.getfixturevalue("pg_databases").create() + "?options=-c%20lock_timeout%3D200"
    yield from start_service(broker_host.new_vhost(), url, request.param)


@contextmanager
def tasks_locked(database_url: str) -> Iterator[None]:
    """Hold, from a connection of our own, SQLite's write lock or PostgreSQL's lock on ``tasks``."""
    if database_url.startswith("sqlite"):
        conn = sqlite3.connect(sa.make_url(database_url).database or "", isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield
        finally:
            conn.close()
        return
    engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as c:
            c.exec_driver_sql("LOCK TABLE tasks IN EXCLUSIVE MODE")
            yield
    finally:
        engine.dispose()


def test_a_database_locked_through_more_than_max_tries_loses_no_result(impatient_svc: Service) -> None:
    """An outage is not the message's fault: a result that meets a locked database again and
    again waits it out, and is stored once the lock goes, not dead-lettered."""
    svc = impatient_svc
    (router,) = [t for t in svc.client.app.state.volley_threads if isinstance(t, ResultRouter)]
    alice, reg, out, (t1,) = tenant_with_tasks(svc, 1)
    svc.broker.drain(topo.DEAD_LETTER_QUEUE)
    with tasks_locked(svc.database_url):
        before = router.loop.outage.outages
        endpoint_publish_result(svc, reg, result_body(t1, 1))
        wait_for(lambda: router.loop.outage.outages - before > MAX_TRIES, what="the router to meet the lock often")
    doc = wait_for(lambda: (d := svc.task(alice, t1))["status"] == "success" and d, what="the result")
    assert serializer.deserialize(doc["result"]) == 1
    assert [decode(b).task_id for _m, _p, b in svc.broker.drain(sdk_queue(alice, out["task_group_id"]))] == [t1]
    assert svc.broker.drain(topo.DEAD_LETTER_QUEUE) == []
