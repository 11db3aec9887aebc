"""Bad inputs over AMQP from a real tenant: Bob registers an endpoint through the service and
uses exactly the broker credentials it hands out, against Alice's endpoint and tasks.

* a result Bob's endpoint forges for Alice's task (under its own routing key: topic permissions
  refuse any other) is dead-lettered; Alice's task is untouched, and her real result still
  reaches her, once;
* a status report naming Alice's endpoint is dead-lettered; her endpoint's status is unchanged;
* malformed, undecodable and unknown-task results are dead-lettered, and the router goes on;
* publishing where a principal may not is ACCESS_REFUSED.

Oversize and deeply nested bodies on each transport are in test_bad_inputs_broker_limits.py and
test_bad_inputs_amqp.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pika
import pytest

from service_helpers import (
    Service,
    User,
    endpoint_publish_result,
    heartbeat_body,
    result_body,
    sdk_queue,
    wait_for,
)
from volley.protocol import topology as topo
from volley.protocol.messages import pack_task

pytest_plugins = ["service_fixtures"]

ACCESS_REFUSED = 403


@dataclass
class Tenants:
    svc: Service
    alice: User
    bob: User
    ep_a: dict[str, Any]
    ep_b: dict[str, Any]
    task: str
    group: str
    dead: list[bytes] = field(default_factory=list)

    def dead_lettered(self, body: bytes) -> bool:
        """Whether ``body`` reached the dead-letter queue (taken from it as it is seen)."""
        self.dead.extend(b for _m, _p, b in self.svc.broker.drain(topo.DEAD_LETTER_QUEUE))
        return body in self.dead

    def publish_as_b(self, exchange: str, routing_key: str, body: bytes) -> None:
        self.svc.broker.publish(exchange, routing_key, body, url=self.ep_b["result_queue_info"]["connection_url"])

    def alice_task_completes(self) -> None:
        """Alice's endpoint sends the real result; it is stored and streamed to her once."""
        svc = self.svc
        assert svc.task(self.alice, self.task)["status"] == "waiting-for-ep"
        endpoint_publish_result(svc, self.ep_a, result_body(self.task, "the real one"))
        wait_for(lambda: svc.task(self.alice, self.task)["status"] == "success", what="alice's result")
        streamed = wait_for(lambda: svc.broker.drain(sdk_queue(self.alice, self.group)), what="alice's stream")
        assert [b for _m, _p, b in streamed] == [result_body(self.task, "the real one")]


@pytest.fixture()
def tenants(svc: Service) -> Iterator[Tenants]:
    alice, bob = svc.new_user(), svc.new_user()
    ep_a, ep_b = svc.register_endpoint(alice), svc.register_endpoint(bob)
    fid = svc.register_function(alice)
    out = svc.submit(alice, ep_a["endpoint_id"], fid, (1,))
    svc.broker.drain(topo.task_queue(ep_a["endpoint_id"]))  # Alice's endpoint "took" it
    t = Tenants(svc, alice, bob, ep_a, ep_b, out["tasks"][fid][0], out["task_group_id"])
    yield t


def test_result_forged_for_another_tenants_task_is_dead_lettered(tenants: Tenants) -> None:
    t = tenants
    forged = result_body(t.task, "forged by bob")
    t.publish_as_b(topo.RESULTS_EXCHANGE, topo.results_routing_key(t.ep_b["endpoint_id"]), forged)
    wait_for(lambda: t.dead_lettered(forged), what="the forged result in the dead-letter queue")
    assert t.svc.task(t.alice, t.task)["status"] == "waiting-for-ep"
    t.alice_task_completes()


def test_status_report_for_another_tenants_endpoint_is_dead_lettered(tenants: Tenants) -> None:
    t = tenants
    a = t.ep_a["endpoint_id"]
    before = t.svc.client.get(f"/v2/endpoints/{a}/status", headers=t.alice.headers).json()
    forged = heartbeat_body(a, forged=True)
    t.publish_as_b(topo.HEARTBEATS_EXCHANGE, topo.heartbeats_routing_key(t.ep_b["endpoint_id"]), forged)
    wait_for(lambda: t.dead_lettered(forged), what="the forged status report in the dead-letter queue")
    after = t.svc.client.get(f"/v2/endpoints/{a}/status", headers=t.alice.headers).json()
    assert after == before and "forged" not in str(after)
    t.alice_task_completes()


def _bad_results(t: Tenants) -> dict[str, bytes]:
    return {
        "empty": b"",
        "garbage": b"\x00\xffnot a message",
        "protocol-2": b"\x02" + result_body(t.task, 1)[1:],
        "not-json": b"\x01{\"message_type\": ",
        "no-data": b'\x01{"message_type":"result"}',
        "unknown-kind": b'\x01{"message_type":"surprise","data":{}}',
        "bad-task-id": b'\x01{"message_type":"result","data":{"task_id":"../x","data":"00\\nx"}}',
        "a-task": pack_task(t.task, "00\nx"),
        "unknown-task": result_body(str(uuid.uuid4()), 1),
        "deep": b'\x01{"message_type":"result","data":' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    }


BAD_RESULTS = ["empty", "garbage", "protocol-2", "not-json", "no-data", "unknown-kind", "bad-task-id", "a-task",
               "unknown-task", "deep"]


@pytest.mark.parametrize("name", BAD_RESULTS)
def test_bad_result_from_an_endpoint_is_dead_lettered_and_others_go_on(tenants: Tenants, name: str) -> None:
    t = tenants
    body = _bad_results(t)[name]
    t.publish_as_b(topo.RESULTS_EXCHANGE, topo.results_routing_key(t.ep_b["endpoint_id"]), body)
    wait_for(lambda: t.dead_lettered(body), what=f"the {name} body in the dead-letter queue")
    t.alice_task_completes()


def _refused(svc: Service, url: str, exchange: str, routing_key: str) -> str:
    conn = svc.broker.connect(url)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            ch.basic_publish(exchange, routing_key, b"\x01{}", mandatory=True)
        assert info.value.reply_code == ACCESS_REFUSED, info.value
        return str(info.value.reply_text)
    finally:
        if conn.is_open:
            conn.close()


# (whose credentials, exchange, routing key) -- a and b are the two endpoints' ids
FORBIDDEN = {
    "ep-results-under-other-key": ("ep_b", topo.RESULTS_EXCHANGE, "{a}.results"),
    "ep-results-wildcard-key": ("ep_b", topo.RESULTS_EXCHANGE, "#"),
    "ep-heartbeat-under-other-key": ("ep_b", topo.HEARTBEATS_EXCHANGE, "{a}.heartbeats"),
    "ep-task-to-other-endpoint": ("ep_b", topo.TASKS_EXCHANGE, "{a}.tasks"),
    "ep-task-to-itself": ("ep_b", topo.TASKS_EXCHANGE, "{b}.tasks"),
    "ep-default-exchange-to-results": ("ep_b", "", topo.RESULTS_QUEUE),
    "ep-dead-letter-exchange": ("ep_b", topo.DEAD_LETTER_EXCHANGE, ""),
    "ep-amq-topic": ("ep_b", "amq.topic", "{a}.results"),
    "user-results": ("bob", topo.RESULTS_EXCHANGE, "{b}.results"),
    "user-tasks": ("bob", topo.TASKS_EXCHANGE, "{a}.tasks"),
    "user-own-result-queue": ("alice", "", "sdk-queue"),
}


@pytest.mark.parametrize("case", list(FORBIDDEN))
def test_publishing_where_a_principal_may_not_is_access_refused(tenants: Tenants, case: str) -> None:
    t = tenants
    who, exchange, key = FORBIDDEN[case]
    a, b = t.ep_a["endpoint_id"], t.ep_b["endpoint_id"]
    key = key.format(a=a, b=b).replace("sdk-queue", sdk_queue(t.alice, t.group))
    if who == "ep_b":
        url = t.ep_b["result_queue_info"]["connection_url"]
    else:
        r = t.svc.client.get("/v2/get_amqp_result_connection_url", headers=getattr(t, who).headers)
        url = r.json()["connection_url"]
    text = _refused(t.svc, url, exchange, key)
    assert "access" in text.lower() or "refused" in text.lower(), text
    t.alice_task_completes()
