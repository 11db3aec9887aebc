"""The result router and heartbeat listener under duplicates, malformed and poison messages.

Ordering makes these deterministic without sleeps: the router consumes one queue in order, so
once a *sentinel* result published after the messages under test has been stored, those
messages have been handled too.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from service_helpers import (
    Service,
    User,
    endpoint_publish_batch,
    endpoint_publish_result,
    heartbeat_body,
    result_body,
    sdk_queue,
    serializer,
    tenant_with_tasks,
    wait_for,
)
from volley.protocol import topology as topo
from volley.protocol.batches import BATCH_HEADER, pack_batch
from volley.protocol.messages import decode, pack_status_report, pack_task
from volley.service.models import Task

pytest_plugins = ["service_fixtures"]


def _settled(svc: Service, user: User, reg: dict[str, Any], sentinel: str) -> None:
    endpoint_publish_result(svc, reg, result_body(sentinel, "sentinel"))
    wait_for(lambda: svc.task(user, sentinel)["status"] == "success", what="the sentinel result")


def test_duplicate_result_changes_nothing_and_is_forwarded_once(svc: Service) -> None:
    alice, reg, out, (t1, sentinel) = tenant_with_tasks(svc, 2)
    first = result_body(t1, 1)
    endpoint_publish_result(svc, reg, first)
    endpoint_publish_result(svc, reg, first)  # redelivered copy
    endpoint_publish_result(svc, reg, result_body(t1, 999))  # a re-run with another answer
    endpoint_publish_result(svc, reg, result_body(t1, error="late failure"))
    _settled(svc, alice, reg, sentinel)

    doc = svc.task(alice, t1)
    assert doc["status"] == "success" and serializer.deserialize(doc["result"]) == 1
    forwarded = svc.broker.drain(sdk_queue(alice, out["task_group_id"]))
    assert [decode(b).task_id for _m, _p, b in forwarded] == [t1, sentinel]
    _m, props, body = forwarded[0]
    assert body == first  # passed through byte for byte
    assert isinstance(props.timestamp, int) and abs(props.timestamp - float(doc["completion_t"])) <= 1


def test_malformed_messages_are_dead_lettered_not_looped(svc: Service, caplog: pytest.LogCaptureFixture) -> None:
    alice, reg, _out, (t1, sentinel) = tenant_with_tasks(svc, 2)
    bob = svc.new_user()
    other = svc.register_endpoint(bob)["endpoint_id"]
    svc.broker.drain(topo.DEAD_LETTER_QUEUE)
    ep = reg["endpoint_id"]
    bad: list[tuple[str, bytes]] = [
        (topo.results_routing_key(ep), b"\x00not a message"),
        (topo.results_routing_key(ep), b"\x02{}"),  # unknown protocol version
        (topo.results_routing_key(ep), b'\x01{"message_type": "result", "data": {"task_id": "x"}}'),
        (topo.results_routing_key(ep), pack_task(t1, "4\n01\nx")),  # a task is not a result
        (topo.results_routing_key(ep), result_body("00000000-0000-4000-8000-000000000000", 1)),  # unknown task
        (topo.results_routing_key(other), result_body(t1, 666)),  # alice's task, from bob's endpoint
    ]
    caplog.set_level(logging.WARNING, logger="volley.service.router")
    for rk, body in bad:  # as the admin: endpoints cannot even send the last one
        svc.broker.publish(topo.RESULTS_EXCHANGE, rk, body)
    _settled(svc, alice, reg, sentinel)

    dead = svc.broker.drain(topo.DEAD_LETTER_QUEUE)
    assert sorted(b for _m, _p, b in dead) == sorted(b for _rk, b in bad)
    assert svc.broker.queue_depth(topo.RESULTS_QUEUE) == 0  # nothing requeued, nothing looping
    lines = [r.getMessage() for r in caplog.records if "dead-lettering" in r.getMessage()]
    assert len(lines) == len(bad)
    assert any("unrecognized protocol version" in line for line in lines)
    assert any("unknown task id" in line for line in lines)
    assert any(f"belongs to endpoint {ep}" in line for line in lines)
    assert svc.task(alice, t1)["status"] == "waiting-for-ep"


def test_result_the_database_refuses_is_dead_lettered(svc: Service) -> None:
    """PostgreSQL text cannot hold NUL: that result is a poison message there.  It must land in
    the dead-letter queue, not be redelivered forever; SQLite simply stores it."""
    alice, reg, _out, (t1, t2, sentinel) = tenant_with_tasks(svc, 3)
    svc.broker.drain(topo.DEAD_LETTER_QUEUE)
    endpoint_publish_result(svc, reg, result_body(t1, error="bad \x00 byte"))
    endpoint_publish_result(svc, reg, result_body(t2, 2))  # same batch, fine
    _settled(svc, alice, reg, sentinel)
    assert svc.task(alice, t2)["status"] == "success"
    dead = svc.broker.drain(topo.DEAD_LETTER_QUEUE)
    if svc.backend == "postgresql":
        assert [decode(b).task_id for _m, _p, b in dead] == [t1]
        assert svc.task(alice, t1)["status"] == "waiting-for-ep"
    else:
        assert dead == []
        assert svc.task(alice, t1)["exception"] == "bad \x00 byte"
    assert svc.broker.queue_depth(topo.RESULTS_QUEUE) == 0


def test_oversize_result_fails_the_task_clearly(svc: Service) -> None:
    alice, reg, out, (t1,) = tenant_with_tasks(svc, 1)
    endpoint_publish_result(svc, reg, result_body(t1, "x" * (topo.MAX_PAYLOAD_SIZE + 1)))
    doc = wait_for(lambda: (d := svc.task(alice, t1))["status"] == "failed" and d, what="the failed task")
    assert doc["exception"].startswith("MaxResultSizeExceeded")
    (fwd,) = svc.broker.drain(sdk_queue(alice, out["task_group_id"]))
    msg = decode(fwd[2])
    assert msg.is_error and msg.error_code == "MaxResultSizeExceeded" and len(fwd[2]) < 10_000


def test_unconfirmed_forward_is_repeated_from_storage(svc: Service) -> None:
    """A result stored but never confirmed into the SDK queue (say the service died in between)
    is forwarded again when its message is redelivered -- from what was stored."""
    alice, reg, out, (t1, sentinel) = tenant_with_tasks(svc, 2)
    endpoint_publish_result(svc, reg, result_body(t1, 1))
    _settled(svc, alice, reg, sentinel)
    queue = sdk_queue(alice, out["task_group_id"])
    assert len(svc.broker.drain(queue)) == 2

    def marked() -> bool:
        with svc.state.sessions() as s:
            return s.get(Task, t1).forwarded is True

    # the marks are written together, every MARK_DELAY_S (1 s); then one is lost, as if the
    # service had died before writing it
    wait_for(marked, what="the task to be marked forwarded")
    with svc.state.sessions() as s:
        s.get(Task, t1).forwarded = False
        s.commit()
    endpoint_publish_result(svc, reg, result_body(t1, 999))
    wait_for(lambda: svc.broker.queue_depth(queue) == 1, what="the repeated forward")
    (fwd,) = svc.broker.drain(queue)
    assert serializer.deserialize(decode(fwd[2]).data) == 1
    wait_for(marked, what="the task to be marked forwarded again")


def test_bad_heartbeats_are_dead_lettered(svc: Service) -> None:
    alice = svc.new_user()
    a, b = svc.register_endpoint(alice)["endpoint_id"], svc.register_endpoint(alice)
    svc.broker.drain(topo.DEAD_LETTER_QUEUE)
    bad = [
        (topo.heartbeats_routing_key(a), b"garbage"),
        (topo.heartbeats_routing_key(b["endpoint_id"]), pack_status_report(a, {"heartbeat_period": 5})),  # spoof
    ]
    for rk, body in bad:
        svc.broker.publish(topo.HEARTBEATS_EXCHANGE, rk, body)
    kw = b["heartbeat_queue_info"]["queue_publish_kwargs"]
    svc.broker.publish(kw["exchange"], kw["routing_key"], heartbeat_body(b["endpoint_id"]),
                       url=b["heartbeat_queue_info"]["connection_url"])
    wait_for(lambda: svc.client.get(f"/v2/endpoints/{b['endpoint_id']}/status", headers=alice.headers)
             .json()["status"] == "online", what="the valid heartbeat")
    assert sorted(m[2] for m in svc.broker.drain(topo.DEAD_LETTER_QUEUE)) == sorted(body for _rk, body in bad)
    assert svc.client.get(f"/v2/endpoints/{a}/status", headers=alice.headers).json()["status"] == "offline"


def test_a_batch_of_results_is_stored_and_forwarded_together(svc: Service) -> None:
    """One router batch of many results, duplicates included, against the real database and
    broker: every task stored once (first result wins), forwarded once, marked forwarded."""
    from volley.service.router import ResultRouter
    from volley.transport.base import PikaDelivery as Delivery

    alice, reg, out, ids = tenant_with_tasks(svc, 6)
    rk = topo.results_routing_key(reg["endpoint_id"])

    def delivery(tag: int, body: bytes) -> Delivery:
        return Delivery(tag, False, topo.RESULTS_EXCHANGE, rk, None, {}, body, decode(body), None)

    batch = [delivery(i, result_body(tid, i)) for i, tid in enumerate(ids)]
    batch += [delivery(10, result_body(ids[0], 999)), delivery(11, result_body(ids[1], error="late"))]
    router = ResultRouter(svc.state.gateway, svc.state.sessions)
    plan = router._route(batch)
    assert plan.rejected == [] and plan.unconfirmed == []

    for i, tid in enumerate(ids):
        doc = svc.task(alice, tid)
        assert doc["status"] == "success" and serializer.deserialize(doc["result"]) == i
    # the forwarded marks are written together, every MARK_DELAY_S: here, now
    with svc.state.sessions() as s:
        assert not any(s.get(Task, tid).forwarded for tid in ids)
    assert router._marks == set(ids)
    router._mark_now()
    with svc.state.sessions() as s:
        assert all(s.get(Task, tid).forwarded is True for tid in ids)
    forwarded = svc.broker.drain(sdk_queue(alice, out["task_group_id"]))
    assert sorted(decode(b).task_id for _m, _p, b in forwarded) == sorted(ids)


def test_a_result_batch_is_stored_forwarded_and_acked_as_its_results(svc: Service) -> None:
    """A Volley endpoint's batch message: every result in it stored and forwarded on its own,
    byte for byte; the message acked once (nothing left in ``results``, nothing dead)."""
    alice, reg, out, ids = tenant_with_tasks(svc, 5)
    svc.broker.drain(topo.DEAD_LETTER_QUEUE)
    bodies = [result_body(tid, i) for i, tid in enumerate(ids[:4])]
    endpoint_publish_batch(svc, reg, bodies)
    _settled(svc, alice, reg, ids[4])
    for i, tid in enumerate(ids[:4]):
        doc = svc.task(alice, tid)
        assert doc["status"] == "success" and serializer.deserialize(doc["result"]) == i
    forwarded = svc.broker.drain(sdk_queue(alice, out["task_group_id"]))
    assert [b for _m, _p, b in forwarded] == [*bodies, result_body(ids[4], "sentinel")]
    assert svc.broker.queue_depth(topo.RESULTS_QUEUE) == 0
    assert svc.broker.drain(topo.DEAD_LETTER_QUEUE) == []


def test_a_batch_with_a_refused_result_keeps_the_rest_and_is_dead_lettered_whole(
    svc: Service, caplog: pytest.LogCaptureFixture,
) -> None:
    """One bad result in a batch (not decodable, unknown task, not a result) does not cost the
    good ones: they are stored and forwarded; the batch lands in the dead-letter queue once,
    with one log line naming every refused result."""
    alice, reg, out, (t1, t2, sentinel) = tenant_with_tasks(svc, 3)
    svc.broker.drain(topo.DEAD_LETTER_QUEUE)
    caplog.set_level(logging.WARNING, logger="volley.service.router")
    unknown = "00000000-0000-4000-8000-000000000000"
    bodies = [result_body(t1, 1), b"\x00garbage", result_body(unknown, 2), pack_task(t2, "4\n01\nx"),
              result_body(t2, 2)]
    body = endpoint_publish_batch(svc, reg, bodies)
    _settled(svc, alice, reg, sentinel)
    assert [svc.task(alice, t)["status"] for t in (t1, t2)] == ["success", "success"]
    forwarded = svc.broker.drain(sdk_queue(alice, out["task_group_id"]))
    assert [decode(b).task_id for _m, _p, b in forwarded] == [t1, t2, sentinel]
    (dead,) = svc.broker.drain(topo.DEAD_LETTER_QUEUE)
    assert dead[2] == body and dead[1].headers[BATCH_HEADER] == 5
    (line,) = [r.getMessage() for r in caplog.records if "dead-lettering" in r.getMessage()]
    assert "result 2 of 5" in line and "result 4 of 5" in line and "unknown task id" in line
    assert svc.broker.queue_depth(topo.RESULTS_QUEUE) == 0


@pytest.mark.parametrize("count, body, why", [
    (3, pack_batch([b"a", b"b"]), "the header announced 3 result(s), the body holds 2"),
    (1, pack_batch([b"a", b"b"]), "follow the 1 result(s)"),
    (2, pack_batch([b"a", b"b"])[:-1], "result 2: declares 1 bytes but only 0 remain"),
    ("2", pack_batch([b"a", b"b"]), "must be a positive integer"),
])
def test_a_malformed_batch_is_dead_lettered(svc: Service, caplog: pytest.LogCaptureFixture,
                                           count: Any, body: bytes, why: str) -> None:
    alice, reg, _out, (sentinel,) = tenant_with_tasks(svc, 1)
    svc.broker.drain(topo.DEAD_LETTER_QUEUE)
    caplog.set_level(logging.WARNING, logger="volley.service.router")
    kw = reg["result_queue_info"]["queue_publish_kwargs"]
    svc.broker.publish(kw["exchange"], kw["routing_key"], body, url=reg["result_queue_info"]["connection_url"],
                       headers={BATCH_HEADER: count})
    _settled(svc, alice, reg, sentinel)
    assert [b for _m, _p, b in svc.broker.drain(topo.DEAD_LETTER_QUEUE)] == [body]
    assert any(why in r.getMessage() for r in caplog.records if "not a valid result batch" in r.getMessage())


def test_results_beyond_one_transaction_are_routed_in_chunks(svc: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batch messages can bring the router many thousand results at once: it routes them
    ROUTE_CHUNK at a time (here 2), and still settles each message once, after all of them."""
    import volley.service.router as router

    monkeypatch.setattr(router, "ROUTE_CHUNK", 2)
    alice, reg, out, ids = tenant_with_tasks(svc, 6)
    svc.broker.drain(topo.DEAD_LETTER_QUEUE)
    endpoint_publish_batch(svc, reg, [result_body(tid, i) for i, tid in enumerate(ids[:5])])
    _settled(svc, alice, reg, ids[5])
    assert [serializer.deserialize(svc.task(alice, t)["result"]) for t in ids[:5]] == [0, 1, 2, 3, 4]
    forwarded = svc.broker.drain(sdk_queue(alice, out["task_group_id"]))
    assert [decode(b).task_id for _m, _p, b in forwarded] == ids
    assert svc.broker.queue_depth(topo.RESULTS_QUEUE) == 0 and svc.broker.drain(topo.DEAD_LETTER_QUEUE) == []
