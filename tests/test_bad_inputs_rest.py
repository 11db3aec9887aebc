"""Bad inputs over REST, written by hand where generated ones are weak: bodies that are not JSON,
the wrong content type, huge headers, unknown ids and another tenant's ids on every route, bad
page sizes.  Each answers a 4xx ``{"code", "message"}`` naming the cause, and afterwards the
other tenant's objects are intact and his tasks still run (``bob_unharmed``)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from service_helpers import Service, User, endpoint_publish_result, result_body, wait_for

pytest_plugins = ["service_fixtures"]


@dataclass
class Pair:
    svc: Service
    alice: User
    bob: User
    a_ep: str
    a_fn: str
    b_ep: dict[str, Any]
    b_fn: str
    b_task: str
    b_group: str

    def call(self, method: str, path: str, **kw: Any) -> Any:
        return self.svc.client.request(method, path, headers={**self.alice.headers, **kw.pop("headers", {})}, **kw)


@pytest.fixture()
def pair(svc: Service) -> Iterator[Pair]:
    alice, bob = svc.new_user(), svc.new_user()
    b_ep = svc.register_endpoint(bob)
    b_fn = svc.register_function(bob)
    out = svc.submit(bob, b_ep["endpoint_id"], b_fn, (1,))
    p = Pair(svc, alice, bob, svc.register_endpoint(alice)["endpoint_id"], svc.register_function(alice),
             b_ep, b_fn, out["tasks"][b_fn][0], out["task_group_id"])
    yield p
    bob_unharmed(p)


def bob_unharmed(p: Pair) -> None:
    """Bob's endpoint, function and task are still his, and his task still completes."""
    svc, bob = p.svc, p.bob
    assert svc.client.get(f"/v2/endpoints/{p.b_ep['endpoint_id']}", headers=bob.headers).status_code == 200
    assert svc.client.get(f"/v2/functions/{p.b_fn}", headers=bob.headers).status_code == 200
    assert svc.task(bob, p.b_task)["status"] == "waiting-for-ep"
    endpoint_publish_result(svc, p.b_ep, result_body(p.b_task, "bob's"))
    wait_for(lambda: svc.task(bob, p.b_task)["status"] == "success", what="bob's result")


def assert_error(r: Any, status: int, code: str, *words: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"code", "message"} and body["code"] == code, body
    for w in words:
        assert w in body["message"], body
    return str(body["message"])


POSTS = ["/v3/functions", "/v3/endpoints", "/v2/batch_status", "/v3/endpoints/{a_ep}/submit"]


# --- bodies ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", POSTS)
@pytest.mark.parametrize(("raw", "words"), [
    (b'{"function_name": "f",', ["JSON decode error"]),
    (b'{"function_name": "\xff"}', ["UTF-8"]),
    (b"[" * 100_000 + b"]" * 100_000, ["JSON"]),
    (b"null", ["body"]),
    (b'"a string"', ["body"]),
], ids=["truncated", "not-utf8", "nested-100k", "null", "string"])
def test_malformed_json_body_is_422(pair: Pair, path: str, raw: bytes, words: list[str]) -> None:
    r = pair.call("POST", path.format(a_ep=pair.a_ep), content=raw, headers={"Content-Type": "application/json"})
    assert_error(r, 422, "INVALID_REQUEST", "malformed request", *words)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_wrong_content_type_is_422(pair: Pair, content_type: str) -> None:
    body = json.dumps({"endpoint_name": "x"}).encode()
    r = pair.call("POST", "/v3/endpoints", content=body, headers={"Content-Type": content_type})
    assert_error(r, 422, "INVALID_REQUEST", "body")
    assert pair.svc.client.get("/v2/endpoints", headers=pair.alice.headers).json() != []


def test_unencodable_dict_key_is_422_not_500(pair: Pair) -> None:
    # a lone surrogate as a function id: the validation message quotes the key, which
    # cannot be written as UTF-8 as it is
    raw = b'{"tasks": {"\\ud800": ["x"]}}'
    r = pair.call("POST", f"/v3/endpoints/{pair.a_ep}/submit", content=raw, headers={"Content-Type": "application/json"})
    assert_error(r, 422, "INVALID_REQUEST", "tasks")


@pytest.mark.parametrize("header", ["Authorization", "X-Anything"])
def test_huge_header_is_refused_or_ignored_cleanly(pair: Pair, header: str) -> None:
    big = "Bearer " + "x" * 64 * 1024 if header == "Authorization" else "y" * 64 * 1024
    r = pair.svc.client.get("/v2/endpoints", headers={**pair.alice.headers, header: big})
    if header == "Authorization":
        assert_error(r, 401, "UNAUTHORIZED")
    else:
        assert r.status_code == 200 and pair.a_ep in r.text


# --- ids -------------------------------------------------------------------------------------------
def _routes(p: Pair, ids: dict[str, str]) -> list[tuple[str, str, dict[str, Any] | None]]:
    ep, fn, task, group = ids["ep"], ids["fn"], ids["task"], ids["group"]
    return [
        ("GET", f"/v2/functions/{fn}", None),
        ("DELETE", f"/v2/functions/{fn}", None),
        ("GET", f"/v2/endpoints/{ep}", None),
        ("GET", f"/v2/endpoints/{ep}/status", None),
        ("GET", f"/v3/endpoints/{ep}/allowed_functions", None),
        ("POST", f"/v3/endpoints/{ep}/lock", None),
        ("DELETE", f"/v2/endpoints/{ep}", None),
        ("PUT", f"/v3/endpoints/{ep}", {"endpoint_name": "mine-now"}),
        ("POST", f"/v3/endpoints/{ep}/submit", {"tasks": {p.a_fn: [_payload()]}}),
        ("POST", f"/v3/endpoints/{p.a_ep}/submit", {"tasks": {fn: [_payload()]}}),
        ("POST", f"/v3/endpoints/{p.a_ep}/submit", {"tasks": {p.a_fn: [_payload()]}, "task_group_id": group}),
        ("GET", f"/v2/tasks/{task}", None),
        ("GET", f"/v2/taskgroup/{group}", None),
    ]


def _payload() -> str:
    from service_helpers import task_payload

    return task_payload(1)


ROUTE_IDS = ["get-function", "delete-function", "get-endpoint", "endpoint-status", "allowed-functions", "lock",
             "delete-endpoint", "put-endpoint", "submit-to-endpoint", "submit-function", "submit-task-group",
             "get-task", "get-task-group"]
# ids a client may choose for a new object: an endpoint's (PUT registers it), a task group's
CLIENT_CHOSEN = {"put-endpoint", "submit-task-group"}


@pytest.mark.parametrize("i", range(len(ROUTE_IDS)), ids=ROUTE_IDS)
def test_another_tenants_id_is_404_like_an_unknown_one(pair: Pair, i: int) -> None:
    bobs = {"ep": pair.b_ep["endpoint_id"], "fn": pair.b_fn, "task": pair.b_task, "group": pair.b_group}
    unknown = {k: str(uuid.uuid4()) for k in bobs}
    method, path, body = _routes(pair, bobs)[i]
    r = pair.call(method, path, json=body)
    message = assert_error(r, 404, "NOT_FOUND", "not found")
    if ROUTE_IDS[i] in CLIENT_CHOSEN:
        return  # a new id here makes a new object of Alice's; an existing one of Bob's is 404
    # the same answer as for an id nobody has: it tells Alice nothing about Bob
    m2, p2, b2 = _routes(pair, unknown)[i]
    r2 = pair.call(m2, p2, json=b2)
    assert r2.status_code == 404 and r2.json()["code"] == "NOT_FOUND"
    for k in bobs:
        message = message.replace(bobs[k], unknown[k])
    assert message == r2.json()["message"]


def test_batch_status_leaves_out_another_tenants_tasks(pair: Pair) -> None:
    r = pair.call("POST", "/v2/batch_status", json={"task_ids": [pair.b_task, str(uuid.uuid4()), "not-an-id", ""]})
    assert r.status_code == 200 and r.json()["results"] == {}


@pytest.mark.parametrize("ident", ["not-a-uuid", "0" * 5000, "²" * 36, "%00", "..%2F..%2Fetc"])
def test_malformed_ids_are_404(pair: Pair, ident: str) -> None:
    for path in (f"/v2/tasks/{ident}", f"/v2/endpoints/{ident}", f"/v2/functions/{ident}", f"/v2/taskgroup/{ident}"):
        r = pair.call("GET", path)
        assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND", (path, r.text)


# --- numbers ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("limit", ["0", "-1", str(10**30), "1.5", "abc", "", "\uff11"])
def test_bad_page_size_is_422_naming_limit(pair: Pair, limit: str) -> None:
    out = pair.svc.submit(pair.alice, pair.a_ep, pair.a_fn, (1,))
    r = pair.call("GET", f"/v2/taskgroup/{out['task_group_id']}", params={"limit": limit})
    assert_error(r, 422, "INVALID_REQUEST", "limit")


@pytest.mark.parametrize("value", [11, -1, "2", True, 1.5])
def test_bad_retry_override_is_422_naming_field(pair: Pair, value: Any) -> None:
    body = {"tasks": {pair.a_fn: ["x"]}, "max_retries_on_system_failure": value}
    r = pair.call("POST", f"/v3/endpoints/{pair.a_ep}/submit", json=body)
    assert_error(r, 422, "INVALID_REQUEST", "max_retries_on_system_failure")
