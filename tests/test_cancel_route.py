"""The cancel route decides from what the service knows.  A task whose endpoint said it stopped
(a Volley agent's final status report) cannot be running, so the service cancels it itself (and
still leaves the endpoint a notice, which it applies before any task when it starts again).
Silence proves nothing -- an endpoint whose heartbeats stopped may be running the task through a
broker outage, and one that never reported may be an upstream endpoint, which keeps no cancels
-- so those tasks, like a live endpoint's, are the endpoint's to decide.  The notice is sent
before anything is committed, and a repeat of the request gets the same answer.  A real service
on SQLite and PostgreSQL, a real broker; the endpoint's heartbeats are published as an endpoint
publishes them."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from service_helpers import (
    BrokerHost,
    Service,
    TcpRelay,
    User,
    backend_of,
    heartbeat_body,
    relayed_settings,
    run_service,
    wait_for,
)
from volley.protocol import topology as topo
from volley.protocol.control import CANCELS_FIRST, parse_control
from volley.service.models import TERMINAL_STATES, Endpoint, Task

pytest_plugins = ["service_fixtures"]


def _published(svc: Service, user: User, reg: dict[str, Any], fid: str) -> str:
    """A task the outbox has put in the endpoint's task queue (left there: not received)."""
    out = svc.submit(user, reg["endpoint_id"], fid)
    task_id = out["tasks"][fid][0]
    wait_for(lambda: svc.count(Task, id=task_id, published=True) == 1, what="the task to be published")
    return str(task_id)


def _cancel(svc: Service, user: User, task_id: str) -> dict[str, str]:
    r = svc.client.post("/v2/tasks/cancel", json={"task_ids": [task_id]}, headers=user.headers)
    assert r.status_code == 200, r.text
    return dict(r.json()["results"])


def _notices(svc: Service, endpoint_id: str) -> list[list[str]]:
    return [parse_control(b).task_ids for _m, _p, b in svc.broker.drain(topo.control_queue(endpoint_id))]


def _report(svc: Service, endpoint_id: str) -> dict[str, Any]:
    with svc.state.sessions() as s:
        ep = s.get(Endpoint, endpoint_id)
        return dict(ep.status_report or {}) if ep is not None else {}


def test_only_an_endpoint_that_said_it_stopped_has_its_tasks_cancelled_by_the_service(svc: Service) -> None:
    alice = svc.new_user()
    fid = svc.register_function(alice)
    reg = svc.register_endpoint(alice)
    ep = reg["endpoint_id"]

    def status() -> str:
        return str(svc.client.get(f"/v2/endpoints/{ep}/status", headers=alice.headers).json()["status"])

    assert status() == "offline"  # registered, never heard from: maybe an upstream endpoint
    first = _published(svc, alice, reg, fid)
    assert _cancel(svc, alice, first) == {first: "requested"}
    assert svc.task(alice, first)["status"] not in TERMINAL_STATES
    assert _notices(svc, ep) == [[first]]

    kw, url = reg["heartbeat_queue_info"]["queue_publish_kwargs"], reg["heartbeat_queue_info"]["connection_url"]
    svc.broker.publish(kw["exchange"], kw["routing_key"], heartbeat_body(ep, total_workers=1, **{CANCELS_FIRST: True}),
                       url=url)
    wait_for(lambda: status() == "online", what="the endpoint to be online")
    held = _published(svc, alice, reg, fid)
    assert _cancel(svc, alice, held) == {held: "requested"}
    assert svc.task(alice, held)["status"] not in TERMINAL_STATES  # the endpoint decides
    assert _notices(svc, ep) == [[held]]

    # heartbeats stop (a broker outage, a paused process): offline, but it may be running the task
    with svc.state.sessions() as s:
        s.execute(sa.update(Endpoint).where(Endpoint.id == ep).values(last_heartbeat=time.time() - 3600))
        s.commit()
    assert status() == "offline"
    assert _cancel(svc, alice, held) == {held: "requested"}
    assert svc.task(alice, held)["status"] not in TERMINAL_STATES
    assert _notices(svc, ep) == [[held]]

    # an upstream endpoint's final report (no CANCELS_FIRST): it would run the task when back
    svc.broker.publish(kw["exchange"], kw["routing_key"], heartbeat_body(ep, active=False), url=url)
    wait_for(lambda: _report(svc, ep).get("active") is False, what="the final report to be stored")
    assert _cancel(svc, alice, held) == {held: "requested"}
    assert _notices(svc, ep) == [[held]]

    svc.broker.publish(kw["exchange"], kw["routing_key"], heartbeat_body(ep, active=False, **{CANCELS_FIRST: True}),
                       url=url)
    wait_for(lambda: _report(svc, ep).get(CANCELS_FIRST) is True,
             what="the Volley agent's final report to be stored")
    assert _cancel(svc, alice, held) == {held: "cancelled"}  # stopped: nothing runs it now
    assert svc.task(alice, held)["status"] == "cancelled"
    assert _notices(svc, ep) == [[held]]  # for the endpoint to drop it when it starts
    assert _cancel(svc, alice, held) == {held: "cancelled"}  # a repeat: the same answer


def test_a_cancel_whose_notice_cannot_reach_the_broker_changes_nothing(
        broker_host: BrokerHost, relay: TcpRelay, fresh_db: str) -> None:
    """The notice goes before the commit: with the service cut off from the broker the answer is
    503 and the task is not marked cancelled (a marked task whose endpoint never got the notice
    would run there); sent again once the broker is back, it goes through."""
    broker = broker_host.new_vhost()
    settings = relayed_settings(broker, fresh_db, relay)
    with contextmanager(run_service)(settings, broker, backend_of(fresh_db)) as svc:
        alice = svc.new_user()
        fid = svc.register_function(alice)
        reg = svc.register_endpoint(alice)
        ep = reg["endpoint_id"]
        kw, url = reg["heartbeat_queue_info"]["queue_publish_kwargs"], reg["heartbeat_queue_info"]["connection_url"]
        svc.broker.publish(kw["exchange"], kw["routing_key"],
                           heartbeat_body(ep, active=False, **{CANCELS_FIRST: True}), url=url)
        wait_for(lambda: _report(svc, ep).get(CANCELS_FIRST) is True, what="the final report to be stored")
        task = _published(svc, alice, reg, fid)
        relay.stop()
        r = svc.client.post("/v2/tasks/cancel", json={"task_ids": [task]}, headers=alice.headers)
        assert r.status_code == 503, r.text
        assert "Retry-After" in r.headers
        assert svc.task(alice, task)["status"] not in TERMINAL_STATES
        relay.start()
        wait_for(lambda: svc.client.post("/v2/tasks/cancel", json={"task_ids": [task]},
                                         headers=alice.headers).status_code == 200, timeout=60,
                 what="the cancel to go through")
        assert svc.task(alice, task)["status"] == "cancelled"
        assert _notices(svc, ep) == [[task]]
