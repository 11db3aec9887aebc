"""The task outbox: tasks committed while the broker is unreachable are kept (answer 200) and
published once it is back, by the running service or by the next one to start; the service's
publisher survives a broker that dropped its connections.

Outages are real: the service reaches the session's broker through a TCP relay that the test
stops (its connections drop, new ones are refused) and starts again; the broker keeps its state
and the test, connected directly, watches the queues.  SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
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
    close_connections,
    connections_in,
    endpoint_publish_result,
    relayed_settings,
    result_body,
    run_service,
    start_service,
    task_payload,
    wait_for,
)
from volley.protocol.messages import decode, pack_task
from volley.service.expiry import release_payloads
from volley.service.models import Task
from volley.service.outbox import OutboxPublisher

pytest_plugins = ["service_fixtures"]

SPEC = {"num_nodes": 2}
SERIALIZERS = ["globus_compute_sdk.serialize.JSONData"]


@contextmanager
def relayed_service(broker: Any, database_url: str, relay: TcpRelay, **overrides: Any) -> Iterator[Service]:
    settings = relayed_settings(broker, database_url, relay, **overrides)
    yield from run_service(settings, broker, backend_of(database_url))


def _published(svc: Service, user_id: str) -> int:
    return svc.count(Task, owner_id=user_id, published=True)


def _check_messages(svc: Service, user: Any, reg: dict[str, Any], fid: str, out: dict[str, Any],
                    args: list[int]) -> None:
    """The endpoint's queue holds each task of ``out`` exactly once, rebuilt exactly as the
    submission would have sent it: body, ids and headers."""
    code = svc.client.get(f"/v2/functions/{fid}", headers=user.headers).json()["function_code"]
    msgs = svc.broker.drain(f"{reg['endpoint_id']}.tasks", url=reg["task_queue_info"]["connection_url"])
    tids = out["tasks"][fid]
    assert Counter(p.headers["task_uuid"] for _m, p, _b in msgs) == Counter(tids)
    by_id = {p.headers["task_uuid"]: (p, body) for _m, p, body in msgs}
    for tid, arg in zip(tids, args, strict=True):
        props, body = by_id[tid]
        assert body == pack_task(tid, code + task_payload(arg))
        assert decode(body).task_id == tid
        assert props.headers["function_uuid"] == fid
        assert json.loads(props.headers["resource_specification"]) == SPEC
        assert props.headers["result_serializers"] == SERIALIZERS
        assert props.headers["max_retries_on_system_failure"] == 2
        assert props.delivery_mode == 2


def _submit(svc: Service, user: Any, ep: str, fid: str, args: list[int]) -> dict[str, Any]:
    return svc.submit(user, ep, fid, *[(a,) for a in args], create_queue=False,
                      resource_specification=SPEC, result_serializers=SERIALIZERS,
                      max_retries_on_system_failure=2)


def test_submit_during_outage_is_kept_and_published_when_the_broker_is_back(
    broker_host: BrokerHost, relay: TcpRelay, fresh_db: str
) -> None:
    broker = broker_host.new_vhost()
    with relayed_service(broker, fresh_db, relay) as svc:
        alice = svc.new_user()
        fid, reg = svc.register_function(alice), svc.register_endpoint(alice)
        ep = reg["endpoint_id"]
        relay.stop()
        out = _submit(svc, alice, ep, fid, [1, 2, 3])  # 200: stored, in the outbox
        assert svc.count(Task, owner_id=alice.id) == 3 and _published(svc, alice.id) == 0
        assert svc.broker.queue_depth(f"{ep}.tasks") == 0
        relay.start()
        wait_for(lambda: _published(svc, alice.id) == 3, what="the outbox to publish the tasks")
        _check_messages(svc, alice, reg, fid, out, [1, 2, 3])


def test_the_next_service_to_start_publishes_what_a_stopped_one_left(
    broker_host: BrokerHost, relay: TcpRelay, fresh_db: str
) -> None:
    broker = broker_host.new_vhost()
    with relayed_service(broker, fresh_db, relay) as svc:
        alice = svc.new_user()
        fid, reg = svc.register_function(alice), svc.register_endpoint(alice)
        relay.stop()
        out = _submit(svc, alice, reg["endpoint_id"], fid, [4, 5])
    assert svc.broker.queue_depth(f"{reg['endpoint_id']}.tasks") == 0  # the first never published
    relay.start()
    with relayed_service(broker, fresh_db, relay) as again:
        wait_for(lambda: _published(again, alice.id) == 2, what="the new service's outbox")
        _check_messages(again, alice, reg, fid, out, [4, 5])


@pytest.mark.parametrize("transport", ["native", "python"])
def test_publisher_reconnects_after_the_broker_dropped_its_connections(
    broker_host: BrokerHost, fresh_db: str, transport: str
) -> None:
    """What a broker restart does to the service's publisher: the next submit reconnects and
    publishes at once (the tasks never need the outbox)."""
    broker = broker_host.new_vhost()
    with contextmanager(start_service)(broker, fresh_db, backend_of(fresh_db), transport=transport) as svc:
        alice = svc.new_user()
        fid, reg = svc.register_function(alice), svc.register_endpoint(alice)
        ep = reg["endpoint_id"]
        before = set(connections_in(broker.info, broker.vhost))
        assert close_connections(broker.info, broker.vhost) >= 1
        # the consumers come back by themselves at once; the publisher only on its next use
        wait_for(lambda: not before & set(connections_in(broker.info, broker.vhost)),
                 what="the broker to drop the service's connections")
        out = _submit(svc, alice, ep, fid, [1, 2])
        assert _published(svc, alice.id) == 2  # confirmed before the answer
        assert Counter(p.headers["task_uuid"] for _m, p, _b in svc.broker.drain(f"{ep}.tasks")) == Counter(
            out["tasks"][fid]
        )


def test_tasks_whose_function_was_deleted_meanwhile_fail_clearly(
    broker_host: BrokerHost, relay: TcpRelay, fresh_db: str
) -> None:
    broker = broker_host.new_vhost()
    with relayed_service(broker, fresh_db, relay) as svc:
        alice = svc.new_user()
        fid, reg = svc.register_function(alice), svc.register_endpoint(alice)
        relay.stop()
        tids = _submit(svc, alice, reg["endpoint_id"], fid, [1, 2])["tasks"][fid]
        assert svc.client.delete(f"/v2/functions/{fid}", headers=alice.headers).status_code == 200
        relay.start()
        # no message can be rebuilt without the code: each task fails instead of waiting forever
        wait_for(lambda: all(svc.task(alice, t)["status"] == "failed" for t in tids), timeout=60,
                 what="the outbox to fail the tasks")
        assert all("FunctionDeleted" in str(svc.task(alice, t)["details"]) for t in tids)
        # the router may store the error result before the outbox marks the tasks done (it
        # does so once the broker confirmed that result): wait for that too
        wait_for(lambda: svc.count(Task, owner_id=alice.id, published=False) == 0, timeout=30,
                 what="the outbox to take the failed tasks out")
        assert svc.broker.queue_depth(f"{reg['endpoint_id']}.tasks") == 0


def test_arguments_are_kept_until_the_task_completes(svc: Service) -> None:
    alice = svc.new_user()
    fid, reg = svc.register_function(alice), svc.register_endpoint(alice)
    done, waiting = svc.submit(alice, reg["endpoint_id"], fid, (1,), (2,))["tasks"][fid]
    svc.broker.drain(f"{reg['endpoint_id']}.tasks")
    endpoint_publish_result(svc, reg, result_body(done, 1))
    wait_for(lambda: svc.task(alice, done)["status"] == "success", what="the result")
    assert release_payloads(svc.state.sessions) >= 1
    with svc.state.sessions() as s:
        held = dict(s.execute(sa.select(Task.id, Task.payload).where(Task.owner_id == alice.id)).all())
    assert held[done] is None and held[waiting] == task_payload(2)


def test_the_outbox_leaves_a_submission_alone_while_its_publish_is_under_way(
    broker_host: BrokerHost, relay: TcpRelay, fresh_db: str
) -> None:
    """However long a large batch takes to publish, the outbox does not send it a second time
    meanwhile (a publish under way is marked on the gateway; here the test holds that mark)."""
    broker = broker_host.new_vhost()
    with relayed_service(broker, fresh_db, relay) as svc:
        alice = svc.new_user()
        fid, reg = svc.register_function(alice), svc.register_endpoint(alice)
        relay.stop()
        _submit(svc, alice, reg["endpoint_id"], fid, [1, 2])
        relay.start()
        with svc.state.sessions() as s:  # old enough for the outbox, no waiting
            (sub_id,) = set(s.scalars(sa.select(Task.submission_id).where(Task.owner_id == alice.id)))
            s.execute(sa.update(Task).where(Task.owner_id == alice.id).values(created_at=Task.created_at - 60))
            s.commit()
        outbox = next(t for t in svc.client.app.state.volley_threads if isinstance(t, OutboxPublisher))
        with svc.state.gateway.publishing(sub_id):
            first = outbox.rounds
            outbox.wake()
            # two whole rounds that reached the broker, the second begun under the mark
            wait_for(lambda: outbox.rounds >= first + 2 and outbox.last_round_ok, what="outbox rounds")
            assert _published(svc, alice.id) == 0
            assert svc.broker.queue_depth(f"{reg['endpoint_id']}.tasks") == 0
        wait_for(lambda: _published(svc, alice.id) == 2, what="the outbox, once the mark is gone")
