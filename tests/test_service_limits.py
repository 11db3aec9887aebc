"""Bounds on what one user can ask of the service (issue 12): each limit is a setting, each
refusal a clear 4xx naming the limit and its setting, and a refused request changes nothing.
Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from service_helpers import Service, new_uuid, task_payload, wait_for
from volley.protocol import topology as topo
from volley.sdk.executor import Executor
from volley.service.models import Endpoint, Function, Submission, Task, TaskGroup
from volley.service.routes import tasks as task_routes
from volley.service.settings import ServiceSettings

pytest_plugins = ["service_fixtures"]

MIB = 1024 * 1024


def _error(r: Any, status: int, code: str, *names: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] == code, body
    for name in names:
        assert name in body["message"], body
    return str(body["message"])


# --- bytes per request -----------------------------------------------------------------------------
def test_body_over_the_limit_is_413_naming_limit_and_setting(svc: Service) -> None:
    alice = svc.new_user()
    limit = svc.state.settings.max_request_bytes
    r = svc.client.post("/v3/functions", json={"function_name": "f", "function_code": "x" * limit},
                        headers=alice.headers)
    _error(r, 413, "PAYLOAD_TOO_LARGE", str(limit), "max_request_bytes")

    def chunks() -> Any:  # no Content-Length: cut off while it streams, same message
        yield b'{"function_name": "f", "function_code": "'
        for _ in range(limit // MIB + 1):
            yield b"x" * MIB
        yield b'"}'

    r = svc.client.post("/v3/functions", content=chunks(),
                        headers={**alice.headers, "Content-Type": "application/json"})
    _error(r, 413, "PAYLOAD_TOO_LARGE", str(limit), "max_request_bytes")


# --- tasks per submit ------------------------------------------------------------------------------
def test_default_task_limit_is_above_what_sdks_send_per_batch() -> None:
    ours = inspect.signature(Executor.__init__).parameters["batch_size"].default
    upstream = 128  # globus_compute_sdk Executor's batch_size
    assert ServiceSettings().max_tasks_per_submit >= max(ours, upstream) * 4


def test_task_limit_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOLLEY_SERVICE_MAX_TASKS_PER_SUBMIT", "7")
    assert ServiceSettings.load().max_tasks_per_submit == 7


def test_too_many_tasks_in_one_submit_is_413_and_stores_nothing(
    svc: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = svc.new_user()
    fid, fid2 = svc.register_function(alice), svc.register_function(alice)
    ep = svc.register_endpoint(alice)["endpoint_id"]
    monkeypatch.setattr(svc.state.settings, "max_tasks_per_submit", 3)
    # counted over all functions of the batch
    body = {"tasks": {fid: [task_payload(i) for i in range(2)], fid2: [task_payload(i) for i in range(2)]}}
    r = svc.client.post(f"/v3/endpoints/{ep}/submit", json=body, headers=alice.headers)
    _error(r, 413, "TOO_MANY_TASKS", "4 tasks", "3", "max_tasks_per_submit")
    assert svc.count(Task, owner_id=alice.id) == 0 and svc.count(Submission, owner_id=alice.id) == 0
    assert svc.broker.queue_depth(f"{ep}.tasks") == 0
    # at the limit is fine
    body = {"tasks": {fid: [task_payload(i) for i in range(3)]}}
    r = svc.client.post(f"/v3/endpoints/{ep}/submit", json=body, headers=alice.headers)
    assert r.status_code == 200, r.text


def test_submit_builds_and_publishes_messages_a_chunk_at_a_time(
    svc: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = svc.new_user()
    fid = svc.register_function(alice)
    ep = svc.register_endpoint(alice)["endpoint_id"]
    gateway = svc.state.gateway
    real = gateway.publish_tasks
    sizes: list[int] = []

    def recording(endpoint_id: str, tasks: Any, **kw: Any) -> set[str]:
        sizes.append(len(tasks))  # what one publish held in memory
        return real(endpoint_id, tasks, **kw)

    monkeypatch.setattr(gateway, "publish_tasks", recording)
    monkeypatch.setattr(task_routes, "PUBLISH_CHUNK", 3)
    answer = svc.submit(alice, ep, fid, *[(i,) for i in range(7)])
    assert sizes == [3, 3, 1]
    ids = answer["tasks"][fid]
    queued = [p.headers["task_uuid"] for _m, p, _b in svc.broker.drain(f"{ep}.tasks")]
    assert queued == ids  # every task, once, in order
    assert svc.count(Task, owner_id=alice.id, published=True) == 7


# --- broker queue limits ---------------------------------------------------------------------------
def _queue_arguments(svc: Service, queue: str) -> dict[str, Any]:
    from urllib.parse import quote

    from service_helpers import management

    api = management(svc.broker.info)
    r = api.session.get(f"{api.base}/queues/{quote(svc.broker.vhost, safe='')}/{quote(queue, safe='')}",
                        auth=api.auth, verify=api.verify, timeout=api.timeout)
    assert r.status_code == 200, r.text
    return dict(r.json()["arguments"])


def test_every_queue_the_service_declares_is_bounded(svc: Service) -> None:
    s = svc.state.settings
    alice = svc.new_user()
    fid = svc.register_function(alice)
    ep = svc.register_endpoint(alice)["endpoint_id"]
    tg = svc.submit(alice, ep, fid)["task_group_id"]
    expected = {
        "results": (s.results_queue_max_length, s.results_queue_max_bytes, "reject-publish"),
        "heartbeats": (s.heartbeats_queue_max_length, s.heartbeats_queue_max_bytes, "reject-publish"),
        f"{ep}.tasks": (s.task_queue_max_length, s.task_queue_max_bytes, "reject-publish"),
        # a forward refused would stall the router for every tenant: the oldest result goes to
        # the dead-letter queue instead (it is stored, and the SDK fetches it over REST)
        f"sdk.{alice.id}.{tg}": (s.sdk_queue_max_length, s.sdk_queue_max_bytes, "drop-head"),
        topo.DEAD_LETTER_QUEUE: (s.dead_letter_max_length, s.dead_letter_max_bytes, "drop-head"),
    }
    for queue, (length, size, overflow) in expected.items():
        args = _queue_arguments(svc, queue)
        assert length > 0 and size > 0
        assert (args.get("x-max-length"), args.get("x-max-length-bytes"), args.get("x-overflow")) == (
            length, size, overflow), (queue, args)


@contextmanager
def _own_service(broker_host: Any, tmp_path: Any, **overrides: Any) -> Iterator[Service]:
    from service_helpers import start_service

    yield from start_service(broker_host.new_vhost(), f"sqlite:///{tmp_path / 'own.db'}", "sqlite", **overrides)


def test_full_task_queue_refuses_publishes_and_the_tasks_wait_in_the_outbox(
    broker_host: Any, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with _own_service(broker_host, tmp_path, task_queue_max_length=2) as svc:
        alice = svc.new_user()
        fid = svc.register_function(alice)
        ep = svc.register_endpoint(alice)["endpoint_id"]
        with caplog.at_level("WARNING"):
            answer = svc.submit(alice, ep, fid, *[(i,) for i in range(5)])
        assert len(answer["tasks"][fid]) == 5
        assert "full" in answer["warning"] and "task_queue_max_length" in answer["warning"], answer
        assert any("full" in r.getMessage() and ep in r.getMessage() for r in caplog.records)
        assert svc.broker.queue_depth(f"{ep}.tasks") == 2  # nothing beyond the bound, nothing lost:
        assert svc.count(Task, owner_id=alice.id, published=False) == 3  # the rest waits
        # as the endpoint takes tasks, the outbox fills the queue again
        taken = [p.headers["task_uuid"] for _m, p, _b in svc.broker.drain(f"{ep}.tasks")]
        wait_for(lambda: svc.count(Task, owner_id=alice.id, published=False) <= 1, what="outbox refill")
        taken += [p.headers["task_uuid"] for _m, p, _b in svc.broker.drain(f"{ep}.tasks")]
        wait_for(lambda: svc.count(Task, owner_id=alice.id, published=False) == 0, what="outbox refill")
        taken += [p.headers["task_uuid"] for _m, p, _b in svc.broker.drain(f"{ep}.tasks")]
        assert set(taken) == set(answer["tasks"][fid])


def test_queues_declared_earlier_with_other_arguments_are_kept(broker_host: Any, tmp_path: Any) -> None:
    """A broker set up by an older version or by hand: `results` and a task queue with
    other bounds than the settings'."""
    broker = broker_host.new_vhost()
    ep = new_uuid()
    old = {"x-dead-letter-exchange": topo.DEAD_LETTER_EXCHANGE, "x-max-length": 5}
    conn = broker.connect()
    try:
        ch = conn.channel()
        ch.queue_declare("results", durable=True, arguments=old)
        ch.queue_declare(f"{ep}.tasks", durable=True, arguments=old)
    finally:
        conn.close()
    from service_helpers import start_service

    with contextmanager(start_service)(broker, f"sqlite:///{tmp_path / 'old.db'}", "sqlite") as svc:
        alice = svc.new_user()
        r = svc.client.put(f"/v3/endpoints/{ep}", json={"endpoint_name": "old"}, headers=alice.headers)
        assert r.status_code == 200, r.text
        assert _queue_arguments(svc, f"{ep}.tasks") == old
        assert _queue_arguments(svc, "results") == old


# --- task group pages ------------------------------------------------------------------------------
def _group_page(svc: Service, user: Any, tg: str, **params: Any) -> Any:
    return svc.client.get(f"/v2/taskgroup/{tg}", params=params, headers=user.headers)


def test_task_group_listing_comes_in_pages(svc: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = svc.new_user()
    fid = svc.register_function(alice)
    ep = svc.register_endpoint(alice)["endpoint_id"]
    tg = svc.submit(alice, ep, fid, *[(i,) for i in range(3)])["task_group_id"]
    ids = svc.submit(alice, ep, fid, *[(i,) for i in range(4)], task_group_id=tg)["tasks"][fid]
    monkeypatch.setattr(svc.state.settings, "max_task_group_page", 3)
    seen: list[str] = []
    r = _group_page(svc, alice, tg)  # upstream's call: no parameters, the first (largest) page
    while True:
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["taskgroup_id"] == tg and len(doc["tasks"]) <= 3
        assert all(set(t) == {"id", "created_at"} for t in doc["tasks"])
        seen += [t["id"] for t in doc["tasks"]]
        if "next" not in doc:
            break
        r = _group_page(svc, alice, tg, after=doc["next"], limit=2)
    assert len(seen) == 7 == len(set(seen)) and seen[-4:] == sorted(seen[-4:]) and set(ids) < set(seen)
    # a group that fits in a page: exactly the old answer, no `next`
    small = svc.submit(alice, ep, fid, *[(i,) for i in range(3)])["task_group_id"]
    assert set(_group_page(svc, alice, small).json()) == {"taskgroup_id", "tasks"}


def test_task_group_page_over_the_limit_or_bad_cursor_is_422(svc: Service) -> None:
    alice = svc.new_user()
    fid = svc.register_function(alice)
    ep = svc.register_endpoint(alice)["endpoint_id"]
    tg = svc.submit(alice, ep, fid)["task_group_id"]
    limit = svc.state.settings.max_task_group_page
    _error(_group_page(svc, alice, tg, limit=limit + 1), 422, "INVALID_REQUEST", str(limit), "max_task_group_page")
    _error(_group_page(svc, alice, tg, limit=0), 422, "INVALID_REQUEST", "limit")
    _error(_group_page(svc, alice, tg, after="garbage"), 422, "INVALID_REQUEST", "after")


def test_executor_reload_tasks_follows_the_pages(svc: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    from service_helpers import endpoint_publish_result, result_body

    alice = svc.new_user()
    fid = svc.register_function(alice)
    reg = svc.register_endpoint(alice)
    answer = svc.submit(alice, reg["endpoint_id"], fid, *[(i,) for i in range(5)])
    ids = answer["tasks"][fid]
    for i, tid in enumerate(ids):
        endpoint_publish_result(svc, reg, result_body(tid, i * i))
    wait_for(lambda: svc.count(Task, owner_id=alice.id, status="success") == 5, what="the results")
    monkeypatch.setattr(svc.state.settings, "max_task_group_page", 2)

    class Api:  # the SDK's HTTP client, over the in-process service
        def get(self, path: str, params: dict[str, Any] | None = None, **_: Any) -> Any:
            r = svc.client.get(path, params=params, headers=alice.headers)
            assert r.status_code == 200, r.text
            return r.json()

        def post(self, path: str, json: Any = None, **_: Any) -> Any:
            r = svc.client.post(path, json=json, headers=alice.headers)
            assert r.status_code == 200, r.text
            return r.json()

    class ServiceClient:
        def __init__(self) -> None:
            from volley.serialize import ComputeSerializer

            self._api = Api()
            self.fx_serializer = ComputeSerializer()
            self.ca_file = svc.broker.info.ca_file

        def get_result_amqp_url(self, **_: Any) -> dict[str, Any]:
            return svc.result_url(alice)

    with Executor(client=ServiceClient(), task_group_id=answer["task_group_id"]) as ex:  # type: ignore[arg-type]
        futures = list(ex.reload_tasks())
        assert sorted(f.task_id for f in futures) == sorted(ids)
        assert sorted(f.result(timeout=30) for f in futures) == [i * i for i in range(5)]


# --- per-user quotas -------------------------------------------------------------------------------
def test_endpoint_quota(svc: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    alice, bob = svc.new_user(), svc.new_user()
    monkeypatch.setattr(svc.state.settings, "max_endpoints_per_user", 2)
    eps = [svc.register_endpoint(alice)["endpoint_id"] for _ in range(2)]
    r = svc.client.post("/v3/endpoints", json={"endpoint_name": "third"}, headers=alice.headers)
    _error(r, 403, "QUOTA_EXCEEDED", "2 endpoints", "max_endpoints_per_user")
    r = svc.client.put(f"/v3/endpoints/{new_uuid()}", json={"endpoint_name": "third"}, headers=alice.headers)
    _error(r, 403, "QUOTA_EXCEEDED", "max_endpoints_per_user")
    assert svc.count(Endpoint, owner_id=alice.id) == 2
    # re-registering one it has is fine; another user has a quota of its own
    r = svc.client.put(f"/v3/endpoints/{eps[0]}", json={"endpoint_name": "again"}, headers=alice.headers)
    assert r.status_code == 200, r.text
    svc.register_endpoint(bob)
    # deleting one makes room
    assert svc.client.delete(f"/v2/endpoints/{eps[1]}", headers=alice.headers).status_code == 200
    svc.register_endpoint(alice)


def test_function_quota(svc: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = svc.new_user()
    monkeypatch.setattr(svc.state.settings, "max_functions_per_user", 2)
    fids = [svc.register_function(alice) for _ in range(2)]
    r = svc.client.post("/v3/functions", json={"function_name": "f", "function_code": "4\n01\nx"},
                        headers=alice.headers)
    _error(r, 403, "QUOTA_EXCEEDED", "2 functions", "max_functions_per_user")
    assert svc.count(Function, owner_id=alice.id) == 2
    assert svc.client.delete(f"/v2/functions/{fids[0]}", headers=alice.headers).status_code == 200
    svc.register_function(alice)


def test_task_group_quota(svc: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = svc.new_user()
    fid = svc.register_function(alice)
    ep = svc.register_endpoint(alice)["endpoint_id"]
    monkeypatch.setattr(svc.state.settings, "max_task_groups_per_user", 2)
    groups = [svc.submit(alice, ep, fid)["task_group_id"] for _ in range(2)]
    r = svc.client.post(f"/v3/endpoints/{ep}/submit", json={"tasks": {fid: [task_payload(1)]}},
                        headers=alice.headers)
    _error(r, 403, "QUOTA_EXCEEDED", "2 task groups", "max_task_groups_per_user")
    r = svc.client.post(f"/v3/endpoints/{ep}/submit",
                        json={"tasks": {fid: [task_payload(1)]}, "task_group_id": new_uuid()}, headers=alice.headers)
    _error(r, 403, "QUOTA_EXCEEDED", "max_task_groups_per_user")
    assert svc.count(TaskGroup, owner_id=alice.id) == 2 and svc.count(Task, owner_id=alice.id) == 2
    svc.submit(alice, ep, fid, task_group_id=groups[0])  # an open group takes more tasks
