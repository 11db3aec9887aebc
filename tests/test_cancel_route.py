"""The cancel route decides from what the service knows: a task whose endpoint is offline cannot
be running, so the service cancels it itself (and still leaves the endpoint a notice, which it
applies before any task when it is back); a live endpoint's task is the endpoint's to decide.
A real service on SQLite and PostgreSQL, a real broker; the endpoint's heartbeats are published
as an endpoint publishes them."""

from __future__ import annotations

from typing import Any

from service_helpers import Service, User, heartbeat_body, wait_for
from volley.protocol import topology as topo
from volley.protocol.control import parse_control
from volley.service.models import Task

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


def test_an_offline_endpoints_task_is_cancelled_by_the_service_a_live_ones_by_its_endpoint(svc: Service) -> None:
    alice = svc.new_user()
    fid = svc.register_function(alice)
    reg = svc.register_endpoint(alice)
    ep = reg["endpoint_id"]

    def status() -> str:
        return str(svc.client.get(f"/v2/endpoints/{ep}/status", headers=alice.headers).json()["status"])

    assert status() == "offline"  # registered, never heard from
    queued = _published(svc, alice, reg, fid)
    assert _cancel(svc, alice, queued) == {queued: "cancelled"}
    doc = svc.task(alice, queued)
    assert doc["status"] == "cancelled" and "while its endpoint was offline" in doc["exception"]
    assert _notices(svc, ep) == [[queued]]  # for the endpoint to drop it when it is back

    kw, url = reg["heartbeat_queue_info"]["queue_publish_kwargs"], reg["heartbeat_queue_info"]["connection_url"]
    svc.broker.publish(kw["exchange"], kw["routing_key"], heartbeat_body(ep, total_workers=1), url=url)
    wait_for(lambda: status() == "online", what="the endpoint to be online")
    held = _published(svc, alice, reg, fid)
    assert _cancel(svc, alice, held) == {held: "requested"}
    assert svc.task(alice, held)["status"] not in ("success", "failed", "cancelled")  # the endpoint decides
    assert _notices(svc, ep) == [[held]]

    svc.broker.publish(kw["exchange"], kw["routing_key"], heartbeat_body(ep, active=False), url=url)
    wait_for(lambda: status() == "offline", what="offline after a final heartbeat")
    assert _cancel(svc, alice, held) == {held: "cancelled"}  # stopped: nothing runs it now
    assert svc.task(alice, held)["status"] == "cancelled"
