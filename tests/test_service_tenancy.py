"""Tenancy on the broker, with the real RabbitMQ node: the credentials the service hands out let
each user read only its own result queues, and each endpoint consume only its own task queue
and publish only under its own routing keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pika
import pytest
import requests

from service_helpers import (
    Service,
    broker_info,
    endpoint_publish_result,
    heartbeat_body,
    management,
    result_body,
    sdk_queue,
    wait_for,
)
from volley.protocol import topology as topo

ACCESS_REFUSED = 403

pytest_plugins = ["service_fixtures"]


def refused(svc: Service, url: str, op: Any) -> str:
    """Run ``op(channel)`` as the principal of ``url``; return the broker's refusal text."""
    conn = svc.broker.connect(url)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            op(ch)
        assert info.value.reply_code == ACCESS_REFUSED, info.value
        return str(info.value.reply_text)
    finally:
        if conn.is_open:
            conn.close()


def allowed(svc: Service, url: str, op: Any) -> Any:
    conn = svc.broker.connect(url)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        return op(ch)
    finally:
        conn.close()


def _consume(queue: str) -> Any:
    def op(ch: Any) -> Any:
        ch.basic_consume(queue, lambda *a: None)
        ch.connection.process_data_events(time_limit=0)

    return op


def _publish(exchange: str, routing_key: str, body: bytes = b"x") -> Any:
    return lambda ch: ch.basic_publish(exchange, routing_key, body, mandatory=True)


def _setup(svc: Service) -> dict[str, Any]:
    alice, bob = svc.new_user(), svc.new_user()
    fid = svc.register_function(alice)
    ep_a, ep_b = svc.register_endpoint(alice), svc.register_endpoint(bob)
    out = svc.submit(alice, ep_a["endpoint_id"], fid, (1,))
    return {"alice": alice, "bob": bob, "ep_a": ep_a, "ep_b": ep_b, "out": out, "fid": fid}


def test_user_cannot_consume_another_users_result_queue(svc: Service) -> None:
    s = _setup(svc)
    alice, bob, out = s["alice"], s["bob"], s["out"]
    queue = sdk_queue(alice, out["task_group_id"])
    a_url, b_url = svc.result_url(alice)["connection_url"], svc.result_url(bob)["connection_url"]
    assert f"u-{bob.id}" in refused(svc, b_url, _consume(queue))
    # alice's own URL reads it: the result arrives there
    (tid,) = out["tasks"][s["fid"]]
    endpoint_publish_result(svc, s["ep_a"], result_body(tid, 5))
    got = wait_for(lambda: svc.broker.drain(queue, url=a_url), what="alice's result")
    assert len(got) == 1


def test_user_credentials_can_only_read_own_queues(svc: Service) -> None:
    s = _setup(svc)
    url = svc.result_url(s["alice"])["connection_url"]
    ep = s["ep_a"]["endpoint_id"]
    for op in (
        _consume(topo.RESULTS_QUEUE),  # everyone's results before routing
        _consume(topo.task_queue(ep)),
        lambda ch: ch.queue_declare(topo.sdk_queue_prefix(s["alice"].id) + "mine"),  # no configure
        _publish(topo.TASKS_EXCHANGE, topo.task_queue(ep)),
        _publish(topo.RESULTS_EXCHANGE, topo.results_routing_key(ep)),
        _publish("", sdk_queue(s["bob"], "x")),
    ):
        refused(svc, url, op)


def test_endpoint_cannot_publish_under_another_endpoints_routing_key(svc: Service) -> None:
    s = _setup(svc)
    a, b = s["ep_a"]["endpoint_id"], s["ep_b"]["endpoint_id"]
    b_url = s["ep_b"]["result_queue_info"]["connection_url"]
    (tid,) = s["out"]["tasks"][s["fid"]]
    text = refused(svc, b_url, _publish(topo.RESULTS_EXCHANGE, topo.results_routing_key(a), result_body(tid, 666)))
    assert "topic" in text and f"{a}.results" in text
    refused(svc, b_url, _publish(topo.HEARTBEATS_EXCHANGE, topo.heartbeats_routing_key(a), heartbeat_body(a)))
    # under its own keys it may publish (passive declares first, as upstream endpoints do)
    def own(ch: Any) -> None:
        ch.exchange_declare(topo.RESULTS_EXCHANGE, "topic", passive=True)
        ch.queue_declare(topo.RESULTS_QUEUE, passive=True)
        ch.basic_publish(topo.HEARTBEATS_EXCHANGE, topo.heartbeats_routing_key(b), heartbeat_body(b), mandatory=True)

    allowed(svc, b_url, own)
    # the forged result never reached alice's task
    assert svc.task(s["alice"], tid)["status"] == "waiting-for-ep"


def test_endpoint_cannot_read_or_inject_other_queues(svc: Service) -> None:
    s = _setup(svc)
    a = s["ep_a"]["endpoint_id"]
    b_url = s["ep_b"]["task_queue_info"]["connection_url"]
    for op in (
        _consume(topo.task_queue(a)),
        _consume(topo.RESULTS_QUEUE),
        _consume(sdk_queue(s["alice"], s["out"]["task_group_id"])),
        _publish(topo.TASKS_EXCHANGE, topo.task_queue(a)),  # no injecting tasks
        _publish("", topo.task_queue(a)),  # not through the default exchange either
        lambda ch: ch.queue_declare("anything"),
        lambda ch: ch.queue_bind(topo.task_queue(s["ep_b"]["endpoint_id"]), topo.RESULTS_EXCHANGE, "#"),
    ):
        refused(svc, b_url, op)
    # its own task queue it consumes
    allowed(svc, b_url, _consume(topo.task_queue(s["ep_b"]["endpoint_id"])))


def test_local_stack_hands_out_per_principal_credentials(stack: dict[str, Any]) -> None:
    """The stack's own service (a real uvicorn process) never gives clients the admin URL, and
    its default endpoint runs on an endpoint user of its own."""
    cfg = json.loads((Path(stack["state_dir"]) / "config.json").read_text())
    r = requests.get(f"{cfg['service_url']}/v2/get_amqp_result_connection_url",
                     headers={"Authorization": f"Bearer {cfg['token']}"}, timeout=30)
    params = pika.URLParameters(r.json()["connection_url"])
    info = broker_info(stack)
    assert params.credentials.username.startswith("u-") and params.credentials.username != info.admin_user
    api = management(info)
    assert api.user_exists(f"e-{stack['endpoint_id']}")
    users = {c["user"] for c in api._call("GET", "/connections?columns=user")}
    assert f"e-{stack['endpoint_id']}" in users
