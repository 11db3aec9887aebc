"""A broker that lost what the service set up on it (a fresh node, an old backup) is put right
without restarting the service: topology, task queues, broker users and permissions, result
queues -- and tasks whose messages went with a lost queue are queued again.

The losses are real: queues and users are deleted through the management API of the session's
broker, in a vhost of each test's own service.  SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from service_helpers import (
    BrokerHost,
    Service,
    backend_of,
    delete_queue,
    endpoint_publish_result,
    management,
    result_body,
    sdk_queue,
    start_service,
    wait_for,
)
from volley.protocol import topology as topo
from volley.protocol.messages import decode
from volley.service.models import Task
from volley.service.restore import restore_broker

pytest_plugins = ["service_fixtures"]


@contextmanager
def own_service(broker_host: BrokerHost, database_url: str) -> Iterator[Service]:
    yield from start_service(broker_host.new_vhost(), database_url, backend_of(database_url))


def _queued(svc: Service, reg: dict[str, Any]) -> Counter[str]:
    """Task ids in the endpoint's queue (taken with the endpoint's own credentials)."""
    msgs = svc.broker.drain(f"{reg['endpoint_id']}.tasks", url=reg["task_queue_info"]["connection_url"])
    return Counter(p.headers["task_uuid"] for _m, p, _b in msgs)


def _restore(svc: Service) -> Any:
    state = svc.state
    return restore_broker(state.gateway, state.credentials, state.sessions)


def test_service_restores_lost_users_and_queues_by_itself_and_tasks_flow(
    broker_host: BrokerHost, fresh_db: str
) -> None:
    with own_service(broker_host, fresh_db) as svc:
        alice = svc.new_user()
        fid, reg = svc.register_function(alice), svc.register_endpoint(alice)
        ep = reg["endpoint_id"]
        lost = svc.submit(alice, ep, fid, (1,), (2,))["tasks"][fid]
        api, info, vhost = management(svc.broker.info), svc.broker.info, svc.broker.vhost
        api.delete_user(f"e-{ep}")
        delete_queue(info, vhost, topo.task_queue(ep))  # with the two task messages
        delete_queue(info, vhost, topo.RESULTS_QUEUE)
        assert not api.user_exists(f"e-{ep}") and not svc.broker.queue_exists(topo.RESULTS_QUEUE)

        wait_for(lambda: api.user_exists(f"e-{ep}") and svc.broker.queue_exists(topo.task_queue(ep))
                 and svc.broker.queue_exists(topo.RESULTS_QUEUE), what="the service to restore the broker")
        # the lost messages are queued again, and the endpoint's re-created user may read them
        wait_for(lambda: svc.broker.queue_depth(topo.task_queue(ep)) == 2, what="the lost tasks again")
        assert _queued(svc, reg) == Counter(lost)

        out = svc.submit(alice, ep, fid, (3,))
        (tid,) = out["tasks"][fid]
        assert _queued(svc, reg) == Counter([tid])
        for t in (tid, *lost):
            endpoint_publish_result(svc, reg, result_body(t, 42))  # as the endpoint's user
        wait_for(lambda: all(svc.task(alice, t)["status"] == "success" for t in (tid, *lost)),
                 what="the results to be stored")
        forwarded = svc.broker.drain(sdk_queue(alice, out["task_group_id"]))
        assert tid in {decode(b).task_id for _m, _p, b in forwarded}


def test_restore_when_nothing_was_lost_changes_nothing(broker_host: BrokerHost, fresh_db: str) -> None:
    with own_service(broker_host, fresh_db) as svc:
        alice = svc.new_user()
        fid, reg = svc.register_function(alice), svc.register_endpoint(alice)
        out = svc.submit(alice, reg["endpoint_id"], fid, (1,), (2,), (3,))
        svc.result_url(alice)  # her SDK streams results: her broker user exists
        report = _restore(svc)
        assert report.lost_queues == [] and report.requeued == 0 and report.endpoints == 1
        assert report.endpoint_users == 0 and report.users == 0
        assert svc.count(Task, owner_id=alice.id, published=True) == 3  # nothing back in the outbox
        assert _queued(svc, reg) == Counter(out["tasks"][fid])  # each once, as before


def test_restore_recreates_result_streams_and_requeues_lost_tasks(broker_host: BrokerHost, fresh_db: str) -> None:
    with own_service(broker_host, fresh_db) as svc:
        alice = svc.new_user()
        fid, reg = svc.register_function(alice), svc.register_endpoint(alice)
        ep = reg["endpoint_id"]
        out = svc.submit(alice, ep, fid, (1,), (2,), (3,))
        stream_url = svc.result_url(alice)["connection_url"]  # what alice's SDK holds
        queue = sdk_queue(alice, out["task_group_id"])
        api, info, vhost = management(svc.broker.info), svc.broker.info, svc.broker.vhost
        api.delete_user(f"u-{alice.id}")
        delete_queue(info, vhost, queue)
        delete_queue(info, vhost, topo.task_queue(ep))

        report = _restore(svc)
        assert report.lost_queues == [ep] and report.requeued == 3
        assert report.sdk_queues >= 1 and report.users == 1 and report.endpoint_users == 0
        assert api.user_exists(f"u-{alice.id}") and svc.broker.queue_exists(queue)
        wait_for(lambda: svc.count(Task, owner_id=alice.id, published=True) == 3, what="the outbox")
        assert _queued(svc, reg) == Counter(out["tasks"][fid])
        # alice's SDK streams with the credentials it already had
        (t1, *_rest) = out["tasks"][fid]
        endpoint_publish_result(svc, reg, result_body(t1, 7))
        wait_for(lambda: svc.broker.queue_depth(queue) == 1, what="the forwarded result")
        got = svc.broker.drain(queue, url=stream_url)
        assert [decode(b).task_id for _m, _p, b in got] == [t1]


def test_a_submit_that_finds_the_queue_gone_requeues_the_tasks_lost_with_it(
    broker_host: BrokerHost, fresh_db: str
) -> None:
    with own_service(broker_host, fresh_db) as svc:
        alice = svc.new_user()
        fid, reg = svc.register_function(alice), svc.register_endpoint(alice)
        ep = reg["endpoint_id"]
        first = svc.submit(alice, ep, fid, (1,), (2,))["tasks"][fid]
        delete_queue(svc.broker.info, svc.broker.vhost, topo.task_queue(ep))
        second = svc.submit(alice, ep, fid, (3,))["tasks"][fid]  # returned: the queue is declared again
        wait_for(lambda: svc.count(Task, owner_id=alice.id, published=True) == 3, what="the outbox")
        assert _queued(svc, reg) == Counter(first + second)
