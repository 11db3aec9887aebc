"""The upstream SDK (globus-compute-sdk 4.19.0, a test-only reference peer) drives our service
with a static bearer token: register a function, submit through its Executor, get the result.

It runs against the local stack's own service process (uvicorn on SQLite) and default endpoint.
The upstream Client only knows fixed service URLs per environment, so the test points its
URL lookup at the stack (upstream documents overriding the web client as the way to reach
another service) and trusts the
stack's CA for the AMQPS result stream through ``SSL_CERT_FILE``, which pika's default TLS
context reads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

gc = pytest.importorskip("globus_compute_sdk", reason="the upstream SDK is a test-only dependency")
globus_sdk = pytest.importorskip("globus_sdk")


def triple(x: int) -> int:
    return 3 * x


def divide(a: float, b: float) -> float:
    return a / b


@pytest.fixture()
def upstream_client(stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    import globus_compute_sdk.sdk.client as upstream_client_module

    cfg = json.loads((Path(stack["state_dir"]) / "config.json").read_text())
    monkeypatch.setattr(upstream_client_module, "get_web_service_url", lambda _env=None: cfg["service_url"])
    monkeypatch.setenv("SSL_CERT_FILE", cfg["ca_file"])
    client = gc.Client(authorizer=globus_sdk.AccessTokenAuthorizer(cfg["token"]))
    assert client.web_service_address == cfg["service_url"]
    yield client
    # upstream keeps one result watcher per task group alive after its Executor shuts down;
    # stop ours, or it would retry the stack's broker once the session's stack is gone
    from globus_compute_sdk.sdk.executor import _RESULT_WATCHERS

    for watcher in list(_RESULT_WATCHERS.values()):
        watcher.shutdown(wait=True)


def test_upstream_executor_round_trip(upstream_client: Any, endpoint_id: str) -> None:
    fid = upstream_client.register_function(triple)
    assert upstream_client.get_function(fid)["function_name"] == "triple"
    with gc.Executor(endpoint_id=endpoint_id, client=upstream_client) as ex:
        by_id = ex.submit_to_registered_function(fid, args=(14,))
        direct = ex.submit(divide, 6, 3)
        failing = ex.submit(divide, 1, 0)
        assert by_id.result(timeout=120) == 42
        assert direct.result(timeout=120) == 2.0
        with pytest.raises(gc.errors.TaskExecutionFailed, match="ZeroDivisionError"):
            failing.result(timeout=120)
    # the polling API agrees with what the stream delivered
    assert upstream_client.get_result(by_id.task_id) == 42
    batch = upstream_client.get_batch_result([by_id.task_id, direct.task_id])
    assert batch[direct.task_id]["result"] == 2.0 and batch[by_id.task_id]["status"] == "success"


def test_upstream_client_sees_our_errors(upstream_client: Any) -> None:
    import uuid

    with pytest.raises(globus_sdk.GlobusAPIError) as info:
        upstream_client.get_task(str(uuid.uuid4()))
    assert info.value.http_status == 404 and info.value.code == "NOT_FOUND"
    ep = upstream_client.register_endpoint("upstream-registered", None)
    assert ep["result_queue_info"]["queue_publish_kwargs"]["routing_key"] == f"{ep['endpoint_id']}.results"
    assert upstream_client.get_endpoint_status(ep["endpoint_id"])["status"] == "offline"
    upstream_client.delete_endpoint(ep["endpoint_id"])


def test_upstream_cancel_stays_local_and_breaks_nothing(upstream_client: Any, endpoint_id: str) -> None:
    """Upstream's ``cancel()`` only cancels its local future (it says True while the future is
    pending, even once the task is registered) and the task runs on; our service's cancel routes
    are not in its API.  The result that comes for the cancelled future must break nothing."""
    from endpoint_helpers import wait_for

    with gc.Executor(endpoint_id=endpoint_id, client=upstream_client) as ex:
        fut = ex.submit(triple, 5)
        # upstream's future has no event for "registered": its task_id appears
        wait_for(lambda: fut.task_id is not None or fut.done(), 60, "the task to be registered")
        assert fut.task_id is not None
        if fut.cancel():  # False only if its result came first
            assert fut.cancelled()
        # the task ran anyway, and the executor goes on working after its result arrived
        wait_for(lambda: upstream_client.get_task(fut.task_id)["status"] == "success", 120,
                 "the cancelled future's task to complete at the service")
        assert ex.submit(triple, 7).result(timeout=120) == 21
    assert upstream_client.get_result(fut.task_id) == 15
