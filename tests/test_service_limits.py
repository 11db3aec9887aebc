"""Bounds on what one user can ask of the service (issue 12): each limit is a setting, each
refusal a clear 4xx naming the limit and its setting, and a refused request changes nothing.
Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from service_helpers import Service, task_payload
from volley.sdk.executor import Executor
from volley.service.models import Submission, Task
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
