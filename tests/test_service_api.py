"""Every REST route of the service: success, each error status, and ownership (another user's
object answers 404 exactly like a missing one).  Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pika
import pytest
import sqlalchemy as sa

from service_helpers import (
    Service,
    endpoint_publish_result,
    heartbeat_body,
    new_uuid,
    result_body,
    sdk_queue,
    serializer,
    task_payload,
    wait_for,
)
from volley.protocol import topology as topo
from volley.protocol.messages import decode
from volley.service.models import Endpoint, Function, Task, TaskGroup

pytest_plugins = ["service_fixtures"]

MIB = 1024 * 1024

# method, path template, JSON body: every authenticated route
AUTH_ROUTES: list[tuple[str, str, Any]] = [
    ("POST", "/v3/functions", {"function_name": "f", "function_code": "4\n01\nx"}),
    ("GET", "/v2/functions/{id}", None),
    ("DELETE", "/v2/functions/{id}", None),
    ("POST", "/v3/endpoints", {"endpoint_name": "e"}),
    ("PUT", "/v3/endpoints/{id}", {"endpoint_name": "e"}),
    ("GET", "/v2/endpoints/{id}/status", None),
    ("GET", "/v2/endpoints/{id}", None),
    ("GET", "/v2/endpoints", None),
    ("DELETE", "/v2/endpoints/{id}", None),
    ("POST", "/v3/endpoints/{id}/lock", None),
    ("GET", "/v3/endpoints/{id}/allowed_functions", None),
    ("POST", "/v3/endpoints/{id}/submit", {"tasks": {}}),
    ("GET", "/v2/tasks/{id}", None),
    ("POST", "/v2/batch_status", {"task_ids": []}),
    ("GET", "/v2/taskgroup/{id}", None),
    ("GET", "/v2/get_amqp_result_connection_url", None),
    ("GET", "/volley/v1/endpoints", None),
    ("GET", "/volley/v1/task_groups", None),
    ("GET", "/volley/v1/task_groups/{id}", None),
    ("POST", "/v2/tasks/cancel", {"task_ids": []}),
    ("POST", "/v2/tasks/{id}/cancel", None),
]


def call(svc: Service, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    return svc.client.request(method, path, json=body, headers=headers or {})


def assert_error(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] == code and isinstance(body["message"], str) and body["message"]
    return dict(body)


# --- version and the schema ---------------------------------------------------------------------
def test_version_needs_no_token(svc: Service) -> None:
    full = svc.client.get("/v2/version", params={"service": "all"}).json()
    assert {"min_sdk_version", "min_ep_version", "api", "git_sha"} <= set(full)
    assert svc.client.get("/v2/version").json() == full["api"]


def test_openapi_schema_matches_routes(svc: Service) -> None:
    spec = svc.client.get("/openapi.json").json()
    served = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    expected = {(m, p.replace("{id}", "{x}")) for m, p, _ in AUTH_ROUTES} | {("GET", "/v2/version")}
    normalised = {(m, _template(p)) for m, p in served}
    assert normalised == expected
    # every operation of the schema is really routed (an unrouted one would be 404 or 405)
    for method, path in served:
        r = call(svc, method, path.replace("{", "").replace("}", ""), None)
        assert r.status_code in ((200,) if path == "/v2/version" else (401,)), (method, path, r.text)
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if path != "/v2/version":
                assert op.get("security") == [{"HTTPBearer": []}], (method, path)
                assert "401" in op["responses"] and "404" in op["responses"], (method, path)
    schemas = spec["components"]["schemas"]
    assert {"request_id", "task_group_id", "endpoint_id", "tasks"} <= set(schemas["Submitted"]["properties"])
    assert {"connection_url", "queue_prefix"} <= set(schemas["AmqpResultUrl"]["required"])
    assert {"task_queue_info", "result_queue_info", "heartbeat_queue_info"} <= set(
        schemas["EndpointRegistered"]["required"]
    )
    assert schemas["TaskDoc"]["required"] == ["task_id", "status"]


def _template(path: str) -> str:
    import re

    return re.sub(r"\{[^}]+\}", "{x}", path)


# --- authentication -------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "path", "body"), AUTH_ROUTES)
def test_missing_or_wrong_token_is_401(svc: Service, method: str, path: str, body: Any) -> None:
    path = path.replace("{id}", new_uuid())
    for headers in ({}, {"Authorization": "Bearer vly_wrong"}, {"Authorization": "Basic dTpw"}):
        r = call(svc, method, path, body, headers)
        assert_error(r, 401, "UNAUTHORIZED")
        assert r.headers["www-authenticate"] == "Bearer"


def test_wrong_token_changes_nothing(svc: Service) -> None:
    before = svc.count(Function)
    r = svc.client.post("/v3/functions", json={"function_name": "f", "function_code": "4\n01\nx"},
                        headers={"Authorization": "Bearer nope"})
    assert_error(r, 401, "UNAUTHORIZED")
    assert svc.count(Function) == before


# --- functions ------------------------------------------------------------------------------------------
def test_function_register_get_delete(svc: Service) -> None:
    alice = svc.new_user()
    code = serializer.pack_buffers([serializer.serialize(len)])
    r = svc.client.post("/v3/functions", headers=alice.headers, json={
        "function_name": "len", "function_code": code, "description": "d",
        "meta": {"python_version": "3.11", "sdk_version": "4.19.0", "serde_identifier": "01"},
    })
    assert r.status_code == 200, r.text
    fid = r.json()["function_uuid"]
    uuid.UUID(fid)
    doc = svc.client.get(f"/v2/functions/{fid}", headers=alice.headers).json()
    assert doc["function_code"] == code and doc["function_name"] == "len" and doc["description"] == "d"
    assert svc.client.delete(f"/v2/functions/{fid}", headers=alice.headers).status_code == 200
    assert_error(svc.client.get(f"/v2/functions/{fid}", headers=alice.headers), 404, "NOT_FOUND")
    assert_error(svc.client.delete(f"/v2/functions/{fid}", headers=alice.headers), 404, "NOT_FOUND")


def test_source_code_registration_is_framed_for_endpoints(svc: Service) -> None:
    alice = svc.new_user()
    r = svc.client.post("/v3/functions", headers=alice.headers, json={
        "function_name": "hi", "function_code": "def hi():\n    return 1\n", "serialized": False,
        "meta": {"python_version": "3.11", "sdk_version": "4.19.0"},
    })
    fid = r.json()["function_uuid"]
    code = svc.client.get(f"/v2/functions/{fid}", headers=alice.headers).json()["function_code"]
    (buf,) = serializer.unpack_buffers(code)
    assert serializer.deserialize(buf)() == 1


def test_function_ownership(svc: Service) -> None:
    alice, bob = svc.new_user(), svc.new_user()
    fid = svc.register_function(alice)
    assert_error(svc.client.get(f"/v2/functions/{fid}", headers=bob.headers), 404, "NOT_FOUND")
    assert_error(svc.client.delete(f"/v2/functions/{fid}", headers=bob.headers), 404, "NOT_FOUND")
    assert svc.count(Function, id=fid) == 1
    # bob cannot run it either
    ep = svc.register_endpoint(bob)["endpoint_id"]
    r = svc.client.post(f"/v3/endpoints/{ep}/submit", headers=bob.headers,
                        json={"tasks": {fid: [task_payload(1)]}})
    assert_error(r, 404, "NOT_FOUND")
    assert svc.count(Task, owner_id=bob.id) == 0


def test_public_function_is_readable_and_runnable_but_not_deletable(svc: Service) -> None:
    alice, bob = svc.new_user(), svc.new_user()
    fid = svc.register_function(alice, public=True)
    assert svc.client.get(f"/v2/functions/{fid}", headers=bob.headers).json()["public"] is True
    ep = svc.register_endpoint(bob)["endpoint_id"]
    svc.submit(bob, ep, fid, (1,))
    assert_error(svc.client.delete(f"/v2/functions/{fid}", headers=bob.headers), 404, "NOT_FOUND")


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"function_code": "4\n01\nx"}, "function_name"),
        ({"function_name": "f"}, "function_code"),
        ({"function_name": "f", "function_code": "not framed"}, "packed buffer"),
        ({"function_name": "f", "function_code": "4\n01\nx4\n01\ny"}, "1 packed buffer"),
        ({"function_name": "f", "function_code": "99\n01\nx"}, "declares 99"),
        ({"function_name": "not an identifier", "function_code": "def f(): pass", "serialized": False}, "identifier"),
        ({"function_name": "f", "function_code": "4\n01\nx", "meta": "not a dict"}, "meta"),
        ([1, 2], "body"),
    ],
)
def test_malformed_function_is_422_and_changes_nothing(svc: Service, body: Any, why: str) -> None:
    alice = svc.new_user()
    r = svc.client.post("/v3/functions", json=body, headers=alice.headers)
    assert why in assert_error(r, 422, "INVALID_REQUEST")["message"]
    assert svc.count(Function, owner_id=alice.id) == 0


def test_unparsable_json_is_422(svc: Service) -> None:
    alice = svc.new_user()
    r = svc.client.post("/v3/functions", content=b'{"function_name": ', headers={
        **alice.headers, "Content-Type": "application/json"})
    assert_error(r, 422, "INVALID_REQUEST")
    assert svc.count(Function, owner_id=alice.id) == 0


def test_body_over_10_mib_is_413_and_changes_nothing(svc: Service) -> None:
    alice = svc.new_user()
    code = "x" * (10 * MIB)
    r = svc.client.post("/v3/functions", json={"function_name": "f", "function_code": code}, headers=alice.headers)
    assert_error(r, 413, "PAYLOAD_TOO_LARGE")

    def chunks() -> Any:  # no Content-Length: the limit is enforced while the body streams
        yield b'{"function_name": "f", "function_code": "'
        for _ in range(11):
            yield b"x" * MIB
        yield b'"}'

    r = svc.client.post("/v3/functions", content=chunks(), headers={**alice.headers, "Content-Type": "application/json"})
    assert_error(r, 413, "PAYLOAD_TOO_LARGE")
    assert svc.count(Function, owner_id=alice.id) == 0


# --- endpoints --------------------------------------------------------------------------------------
def test_endpoint_registration_hands_out_own_credentials(svc: Service) -> None:
    alice = svc.new_user()
    reg = svc.register_endpoint(alice, display_name="Alice's", metadata={"endpoint_version": "1"})
    ep = reg["endpoint_id"]
    uuid.UUID(ep)
    assert reg["task_queue_info"]["queue"] == f"{ep}.tasks" and reg["task_queue_info"]["exchange"] == "tasks"
    for key, name in (("result_queue_info", "results"), ("heartbeat_queue_info", "heartbeats")):
        info = reg[key]
        assert info["exchange"] == name and info["queue"] == name
        assert info["queue_publish_kwargs"] == {
            "exchange": name, "routing_key": f"{ep}.{name}", "mandatory": True, "properties": {"delivery_mode": 2},
        }
    url = pika.URLParameters(reg["task_queue_info"]["connection_url"])
    assert url.credentials.username == f"e-{ep}"  # its own broker user, never the admin's
    assert url.virtual_host == svc.broker.vhost
    assert svc.broker.queue_exists(f"{ep}.tasks")
    doc = svc.client.get(f"/v2/endpoints/{ep}", headers=alice.headers).json()
    assert doc["display_name"] == "Alice's" and doc["metadata"] == {"endpoint_version": "1"}


def test_put_registers_under_given_id_and_updates(svc: Service) -> None:
    alice = svc.new_user()
    ep = new_uuid()
    r = svc.client.put(f"/v3/endpoints/{ep}", json={"endpoint_name": "one"}, headers=alice.headers)
    assert r.status_code == 200 and r.json()["endpoint_id"] == ep
    r = svc.client.put(f"/v3/endpoints/{ep.upper()}", json={"endpoint_name": "two"}, headers=alice.headers)
    assert r.json()["endpoint_id"] == ep
    assert svc.client.get(f"/v2/endpoints/{ep}", headers=alice.headers).json()["name"] == "two"
    assert svc.count(Endpoint, owner_id=alice.id) == 1


def test_endpoint_ownership(svc: Service) -> None:
    alice, bob = svc.new_user(), svc.new_user()
    ep = svc.register_endpoint(alice, endpoint_name="alices")["endpoint_id"]
    for method, path in [
        ("GET", f"/v2/endpoints/{ep}"), ("GET", f"/v2/endpoints/{ep}/status"),
        ("DELETE", f"/v2/endpoints/{ep}"), ("POST", f"/v3/endpoints/{ep}/lock"),
        ("GET", f"/v3/endpoints/{ep}/allowed_functions"),
    ]:
        assert_error(call(svc, method, path, headers=bob.headers), 404, "NOT_FOUND")
    # taking it over by re-registering its id is refused the same way, and changes nothing
    r = svc.client.put(f"/v3/endpoints/{ep}", json={"endpoint_name": "bobs"}, headers=bob.headers)
    assert_error(r, 404, "NOT_FOUND")
    fid = svc.register_function(bob)
    r = svc.client.post(f"/v3/endpoints/{ep}/submit", json={"tasks": {fid: [task_payload(1)]}}, headers=bob.headers)
    assert_error(r, 404, "NOT_FOUND")
    assert [e["uuid"] for e in svc.client.get("/v2/endpoints", headers=bob.headers).json()] == []
    assert [e["uuid"] for e in svc.client.get("/v2/endpoints", headers=alice.headers).json()] == [ep]
    doc = svc.client.get(f"/v2/endpoints/{ep}", headers=alice.headers).json()
    assert doc["name"] == "alices" and doc["locked"] is False
    assert svc.count(Task, owner_id=bob.id) == 0


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({}, "endpoint_name"),
        ({"endpoint_name": ""}, "endpoint_name"),
        ({"endpoint_name": "e", "allowed_functions": ["not-a-uuid"]}, "allowed_functions"),
        ({"endpoint_name": "e", "metadata": [1]}, "metadata"),
    ],
)
def test_malformed_endpoint_registration_is_422(svc: Service, body: Any, why: str) -> None:
    alice = svc.new_user()
    r = svc.client.post("/v3/endpoints", json=body, headers=alice.headers)
    assert why in assert_error(r, 422, "INVALID_REQUEST")["message"]
    r = svc.client.put("/v3/endpoints/not-a-uuid", json={"endpoint_name": "e"}, headers=alice.headers)
    assert "not a UUID" in assert_error(r, 422, "INVALID_REQUEST")["message"]
    assert svc.count(Endpoint, owner_id=alice.id) == 0


def test_unknown_or_malformed_ids_are_404(svc: Service) -> None:
    alice = svc.new_user()
    for ident in (new_uuid(), "nope"):
        for method, path in [
            ("GET", f"/v2/endpoints/{ident}"), ("GET", f"/v2/endpoints/{ident}/status"),
            ("DELETE", f"/v2/endpoints/{ident}"), ("POST", f"/v3/endpoints/{ident}/lock"),
            ("GET", f"/v3/endpoints/{ident}/allowed_functions"), ("GET", f"/v2/functions/{ident}"),
            ("DELETE", f"/v2/functions/{ident}"), ("GET", f"/v2/tasks/{ident}"),
            ("GET", f"/v2/taskgroup/{ident}"),
        ]:
            assert_error(call(svc, method, path, headers=alice.headers), 404, "NOT_FOUND")


def test_status_follows_heartbeats(svc: Service) -> None:
    alice = svc.new_user()
    reg = svc.register_endpoint(alice)
    ep = reg["endpoint_id"]

    def status() -> dict[str, Any]:
        return dict(svc.client.get(f"/v2/endpoints/{ep}/status", headers=alice.headers).json())

    assert status()["status"] == "offline"
    kw, url = reg["heartbeat_queue_info"]["queue_publish_kwargs"], reg["heartbeat_queue_info"]["connection_url"]
    svc.broker.publish(kw["exchange"], kw["routing_key"], heartbeat_body(ep, total_workers=4), url=url)
    online = wait_for(lambda: (s := status())["status"] == "online" and s, what="online")
    assert online["details"]["total_workers"] == 4
    svc.broker.publish(kw["exchange"], kw["routing_key"], heartbeat_body(ep, active=False), url=url)
    wait_for(lambda: status()["status"] == "offline", what="offline after a final heartbeat")


def test_heartbeat_age_decides_online() -> None:
    from volley.service.routes.endpoints import endpoint_status

    ep = Endpoint(last_heartbeat=1000.0, heartbeat_period=5.0, active=True)
    assert endpoint_status(ep, now=1014.0) == "online"
    assert endpoint_status(ep, now=1016.0) == "offline"  # three periods missed
    assert endpoint_status(Endpoint(last_heartbeat=None, heartbeat_period=5.0, active=True), now=0) == "offline"


def test_allowed_functions_route_and_enforcement(svc: Service) -> None:
    alice = svc.new_user()
    ok, other = svc.register_function(alice), svc.register_function(alice)
    ep = svc.register_endpoint(alice, allowed_functions=[ok])["endpoint_id"]
    doc = svc.client.get(f"/v3/endpoints/{ep}/allowed_functions", headers=alice.headers).json()
    assert doc == {"endpoint_id": ep, "restricted": True, "functions": [ok]}
    svc.submit(alice, ep, ok, (1,))
    r = svc.client.post(f"/v3/endpoints/{ep}/submit", json={"tasks": {other: [task_payload(1)]}}, headers=alice.headers)
    assert other in assert_error(r, 403, "FUNCTION_NOT_ALLOWED")["message"]
    assert svc.count(Task, function_id=other) == 0
    free = svc.register_endpoint(alice)["endpoint_id"]
    doc = svc.client.get(f"/v3/endpoints/{free}/allowed_functions", headers=alice.headers).json()
    assert doc == {"endpoint_id": free, "restricted": False, "functions": []}


def test_lock_blocks_registration_and_revokes_broker_access(svc: Service) -> None:
    alice = svc.new_user()
    reg = svc.register_endpoint(alice)
    ep, url = reg["endpoint_id"], reg["task_queue_info"]["connection_url"]
    conn = svc.broker.connect(url)  # the endpoint is connected
    r = svc.client.post(f"/v3/endpoints/{ep}/lock", headers=alice.headers)
    assert r.status_code == 200, r.text
    assert r.json()["endpoint_id"] == ep and r.json()["lock_expiration_timestamp"]
    # RabbitMQ closes the revoked user's connections and refuses new logins
    wait_for(lambda: not _alive(conn), what="the locked endpoint's connection to close")
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        svc.broker.connect(url)
    r = svc.client.put(f"/v3/endpoints/{ep}", json={"endpoint_name": "ep"}, headers=alice.headers)
    assert_error(r, 423, "ENDPOINT_LOCKED")
    assert svc.client.get(f"/v2/endpoints/{ep}", headers=alice.headers).json()["locked"] is True
    # once the lock has expired, registration gives it its access back
    with svc.state.sessions() as s:
        s.get(Endpoint, ep).locked_until = 1.0
        s.commit()
    again = svc.client.put(f"/v3/endpoints/{ep}", json={"endpoint_name": "ep"}, headers=alice.headers).json()
    svc.broker.connect(again["task_queue_info"]["connection_url"]).close()


def _alive(conn: pika.BlockingConnection) -> bool:
    try:
        conn.process_data_events(time_limit=0)
    except pika.exceptions.AMQPError:
        return False
    return conn.is_open


def test_delete_endpoint_revokes_and_fails_waiting_tasks(svc: Service) -> None:
    alice = svc.new_user()
    fid = svc.register_function(alice)
    reg = svc.register_endpoint(alice)
    ep = reg["endpoint_id"]
    out = svc.submit(alice, ep, fid, (1,), (2,))
    r = svc.client.delete(f"/v2/endpoints/{ep}", headers=alice.headers)
    assert r.status_code == 200, r.text
    assert_error(svc.client.get(f"/v2/endpoints/{ep}", headers=alice.headers), 404, "NOT_FOUND")
    assert not svc.broker.queue_exists(f"{ep}.tasks")
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        svc.broker.connect(reg["task_queue_info"]["connection_url"])
    for tid in out["tasks"][fid]:
        doc = wait_for(lambda t=tid: (d := svc.task(alice, t))["status"] == "failed" and d, what="failed task")
        assert "was deleted" in doc["exception"]
    # ... and the SDK hears of it like of any result
    got = svc.broker.drain(sdk_queue(alice, out["task_group_id"]))
    assert sorted(decode(b).task_id for _m, _p, b in got) == sorted(out["tasks"][fid])


# --- submission --------------------------------------------------------------------------------------------
def test_submit_publishes_tasks_with_headers_and_packed_buffer(svc: Service) -> None:
    alice = svc.new_user()
    fid = svc.register_function(alice)
    reg = svc.register_endpoint(alice)
    ep = reg["endpoint_id"]
    spec = {"num_nodes": 2}
    out = svc.submit(alice, ep, fid, (1,), (2,), resource_specification=spec,
                     result_serializers=["globus_compute_sdk.serialize.JSONData"])
    assert set(out) >= {"request_id", "task_group_id", "endpoint_id", "tasks"} and out["endpoint_id"] == ep
    uuid.UUID(out["request_id"])
    tids = out["tasks"][fid]
    assert len(tids) == 2
    code = svc.client.get(f"/v2/functions/{fid}", headers=alice.headers).json()["function_code"]
    # read the queue as the endpoint does, with its own credentials
    msgs = svc.broker.drain(f"{ep}.tasks", url=reg["task_queue_info"]["connection_url"])
    assert [p.headers["task_uuid"] for _m, p, _b in msgs] == tids  # submission order
    for (_m, props, body), args in zip(msgs, [(1,), (2,)], strict=True):
        assert props.headers["function_uuid"] == fid
        assert json.loads(props.headers["resource_specification"]) == spec
        assert props.headers["result_serializers"] == ["globus_compute_sdk.serialize.JSONData"]
        assert props.delivery_mode == 2
        task = decode(body)
        assert task.kind == "task" and task.task_id == props.headers["task_uuid"]
        assert task.data == code + task_payload(*args)
        _fn, args_buf, _kwargs = serializer.unpack_buffers(task.data)
        assert serializer.deserialize(args_buf) == args
    assert svc.task(alice, tids[0])["status"] == "waiting-for-ep"


def test_create_queue_declares_result_queue_before_answering(svc: Service) -> None:
    alice = svc.new_user()
    fid, ep = svc.register_function(alice), svc.register_endpoint(alice)["endpoint_id"]
    tg = new_uuid()
    out = svc.submit(alice, ep, fid, (1,), create_queue=True, task_group_id=tg)
    assert out["task_group_id"] == tg
    assert svc.broker.queue_exists(sdk_queue(alice, tg))  # right after the answer, no waiting
    plain = svc.submit(alice, ep, fid, (1,), create_queue=False)
    assert not svc.broker.queue_exists(sdk_queue(alice, plain["task_group_id"]))


def test_submit_bulk_inserts_tasks_in_one_statement(svc: Service) -> None:
    alice = svc.new_user()
    fid, ep = svc.register_function(alice), svc.register_endpoint(alice)["endpoint_id"]
    engine = svc.state.sessions.kw["bind"]
    inserts: list[tuple[str, bool]] = []

    def seen(_conn: Any, _cur: Any, statement: str, _params: Any, _ctx: Any, executemany: bool) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO TASKS"):
            inserts.append((statement, executemany))

    sa.event.listen(engine, "before_cursor_execute", seen)
    try:
        out = svc.submit(alice, ep, fid, *[(i,) for i in range(300)])
    finally:
        sa.event.remove(engine, "before_cursor_execute", seen)
    assert len(out["tasks"][fid]) == 300 and svc.count(Task, owner_id=alice.id) == 300
    assert len(inserts) == 1 and inserts[0][1] is True
    svc.broker.drain(f"{ep}.tasks")


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"tasks": {}}, "at least one task"),
        ({"tasks": {"{fid}": []}}, "at least one task"),
        ({"tasks": {"not-a-uuid": ["x"]}}, "tasks"),
        ({"tasks": {"{fid}": ["garbage"]}}, "not a packed buffer"),
        ({"tasks": {"{fid}": ["4\n00\nx"]}}, "2 packed buffer"),
        ({"tasks": {"{fid}": "not a list"}}, "tasks"),
        ({"tasks": {"{fid}": ["{payload}"]}, "task_group_id": "nope"}, "task_group_id"),
        ({"tasks": {"{fid}": ["{payload}"]}, "resource_specification": [1]}, "resource_specification"),
        ({"create_queue": True}, "tasks"),
    ],
)
def test_malformed_submission_is_422_and_changes_nothing(svc: Service, body: Any, why: str) -> None:
    alice = svc.new_user()
    fid, ep = svc.register_function(alice), svc.register_endpoint(alice)["endpoint_id"]
    text = json.dumps(body).replace("{fid}", fid).replace("{payload}", json.dumps(task_payload(1))[1:-1])
    r = svc.client.post(f"/v3/endpoints/{ep}/submit", content=text,
                        headers={**alice.headers, "Content-Type": "application/json"})
    assert why in assert_error(r, 422, "INVALID_REQUEST")["message"]
    assert svc.count(Task, owner_id=alice.id) == 0 and svc.count(TaskGroup, owner_id=alice.id) == 0
    assert svc.broker.queue_depth(f"{ep}.tasks") == 0


def test_submit_to_unknown_endpoint_or_function_is_404(svc: Service) -> None:
    alice = svc.new_user()
    fid, ep = svc.register_function(alice), svc.register_endpoint(alice)["endpoint_id"]
    body = {"tasks": {fid: [task_payload(1)]}}
    assert_error(svc.client.post(f"/v3/endpoints/{new_uuid()}/submit", json=body, headers=alice.headers), 404, "NOT_FOUND")
    body = {"tasks": {new_uuid(): [task_payload(1)]}}
    assert_error(svc.client.post(f"/v3/endpoints/{ep}/submit", json=body, headers=alice.headers), 404, "NOT_FOUND")
    assert svc.count(Task, owner_id=alice.id) == 0


def test_task_over_10_mib_with_its_function_is_413(svc: Service) -> None:
    alice = svc.new_user()
    big = serializer.pack_buffers([serializer.serialize(bytes(MIB))])  # ~1.4 MiB of function code
    fid = svc.register_function(alice, function_code=big)
    ep = svc.register_endpoint(alice)["endpoint_id"]
    payload = task_payload("x" * (9 * MIB))  # fits the body limit, not with the function
    r = svc.client.post(f"/v3/endpoints/{ep}/submit", json={"tasks": {fid: [payload]}}, headers=alice.headers)
    assert_error(r, 413, "PAYLOAD_TOO_LARGE")
    assert svc.count(Task, owner_id=alice.id) == 0 and svc.broker.queue_depth(f"{ep}.tasks") == 0


def test_another_users_task_group_is_404(svc: Service) -> None:
    alice, bob = svc.new_user(), svc.new_user()
    out = svc.submit(alice, svc.register_endpoint(alice)["endpoint_id"], svc.register_function(alice), (1,))
    tg = out["task_group_id"]
    bfid, bep = svc.register_function(bob), svc.register_endpoint(bob)["endpoint_id"]
    r = svc.client.post(f"/v3/endpoints/{bep}/submit", headers=bob.headers,
                        json={"tasks": {bfid: [task_payload(1)]}, "task_group_id": tg, "create_queue": True})
    assert_error(r, 404, "NOT_FOUND")
    assert_error(svc.client.get(f"/v2/taskgroup/{tg}", headers=bob.headers), 404, "NOT_FOUND")
    assert svc.count(Task, owner_id=bob.id) == 0
    assert not svc.broker.queue_exists(sdk_queue(bob, tg))


# --- task status -----------------------------------------------------------------------------------------
def test_task_status_batch_status_and_task_group(svc: Service) -> None:
    alice, bob = svc.new_user(), svc.new_user()
    fid = svc.register_function(alice)
    reg = svc.register_endpoint(alice)
    out = svc.submit(alice, reg["endpoint_id"], fid, (1,), (2,), (3,))
    ok, bad, waiting = out["tasks"][fid]
    endpoint_publish_result(svc, reg, result_body(ok, 42))
    endpoint_publish_result(svc, reg, result_body(bad, error="Traceback ...\nZeroDivisionError: x"))
    wait_for(lambda: svc.task(alice, bad)["status"] == "failed", what="the failed task")
    wait_for(lambda: svc.task(alice, ok)["status"] == "success", what="the good task")

    doc = svc.task(alice, ok)
    assert serializer.deserialize(doc["result"]) == 42 and "exception" not in doc
    assert float(doc["completion_t"]) > 0 and doc["details"]["python_version"] == "3.11"
    doc = svc.task(alice, bad)
    assert doc["exception"].endswith("ZeroDivisionError: x") and "result" not in doc
    pending = svc.task(alice, waiting)
    assert pending == {"task_id": waiting, "status": "waiting-for-ep", "task_group_id": out["task_group_id"]}

    r = svc.client.post("/v2/batch_status", headers=alice.headers,
                        json={"task_ids": [ok, bad, waiting, new_uuid(), "garbage"]})
    body = r.json()
    assert body["response"] == "batch" and set(body["results"]) == {ok, bad, waiting}
    assert body["results"][ok]["status"] == "success"

    tg = svc.client.get(f"/v2/taskgroup/{out['task_group_id']}", headers=alice.headers).json()
    assert tg["taskgroup_id"] == out["task_group_id"] and sorted(t["id"] for t in tg["tasks"]) == sorted([ok, bad, waiting])

    # bob sees none of it
    assert_error(svc.client.get(f"/v2/tasks/{ok}", headers=bob.headers), 404, "NOT_FOUND")
    r = svc.client.post("/v2/batch_status", headers=bob.headers, json={"task_ids": [ok, bad, waiting]})
    assert r.json()["results"] == {}
    assert_error(svc.client.post("/v2/batch_status", headers=alice.headers, json={"task_ids": "x"}), 422, "INVALID_REQUEST")


def test_taskgroup_reload_creates_result_queue(svc: Service) -> None:
    alice = svc.new_user()
    out = svc.submit(alice, svc.register_endpoint(alice)["endpoint_id"], svc.register_function(alice), (1,),
                     create_queue=False)
    tg = out["task_group_id"]
    assert not svc.broker.queue_exists(sdk_queue(alice, tg))
    svc.client.get(f"/v2/taskgroup/{tg}", headers=alice.headers)
    assert svc.broker.queue_exists(sdk_queue(alice, tg))


def test_expired_tasks_answer_404(svc: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    """A finished task expires task_ttl_s after it completed (an unfinished one never does:
    tests/test_purge.py)."""
    alice = svc.new_user()
    reg = svc.register_endpoint(alice)
    out = svc.submit(alice, reg["endpoint_id"], svc.register_function(alice), (1,))
    (tid,) = next(iter(out["tasks"].values()))
    endpoint_publish_result(svc, reg, result_body(tid, 1))
    wait_for(lambda: svc.task(alice, tid)["status"] == "success", what="the result")
    monkeypatch.setattr(svc.state.settings, "task_ttl_s", 0.0)
    assert_error(svc.client.get(f"/v2/tasks/{tid}", headers=alice.headers), 404, "NOT_FOUND")
    assert svc.client.post("/v2/batch_status", headers=alice.headers, json={"task_ids": [tid]}).json()["results"] == {}
    assert svc.client.get(f"/v2/taskgroup/{out['task_group_id']}", headers=alice.headers).json()["tasks"] == []


def test_result_url_is_the_users_own(svc: Service) -> None:
    alice = svc.new_user()
    info = svc.result_url(alice)
    assert info["queue_prefix"] == topo.sdk_queue_prefix(alice.id)
    params = pika.URLParameters(info["connection_url"])
    assert params.credentials.username == f"u-{alice.id}"
    assert params.credentials.password != svc.broker.info.admin_password
    assert svc.result_url(alice) == info  # stable: handed out again, same credentials
