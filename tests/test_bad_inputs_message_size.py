"""Bad inputs: messages the broker would refuse (issue 12, the known gap).

The broker closes the publisher's channel on a message over its ``max_message_size`` (16 MiB).
Payload limits count characters (10 MiB), so a message within them can still be larger in
bytes: multi-byte UTF-8 in the function code, characters that JSON escapes.  Before these
checks, the service stored such a task, failed to publish it and left it to the outbox, which
failed again for ever; the endpoint kept such a result for re-sending, for ever, and with it
every result in the same batch.  Now the service refuses the task with 413 and stores nothing,
and the endpoint answers the task with an error naming the limit.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

import endpoint_helpers as eh
from service_helpers import Service
from volley import Executor
from volley.errors import TaskExecutionFailed
from volley.protocol import topology as topo
from volley.serialize.utils import pack_buffers
from volley.service.models import Task

pytest_plugins = ["service_fixtures"]

FAST = "heartbeat_period: 1\nshutdown_grace: 1\n"


def _post_utf8(svc: Service, path: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
    # raw UTF-8 (not \\u escapes), as any client may send it: 3 bytes per euro sign
    return svc.client.post(path, content=json.dumps(body, ensure_ascii=False).encode(),
                           headers={**headers, "Content-Type": "application/json"})


def test_task_message_over_the_broker_limit_is_413_and_stores_nothing(svc: Service) -> None:
    user = svc.new_user()
    ep = svc.register_endpoint(user)["endpoint_id"]
    # 3.4 M characters of code (10.2 MB of UTF-8: within both the character and the request
    # limit) and 7 M characters of arguments: 10.4 M characters, under MAX_PAYLOAD_SIZE, but
    # each task message would carry 17.2 MB
    code = pack_buffers(["st\n" + "€" * 3_400_000])
    r = _post_utf8(svc, "/v3/functions", {"function_name": "f", "function_code": code,
                                          "meta": {"python_version": "3", "sdk_version": "0"}}, user.headers)
    assert r.status_code == 200, r.text
    fid = r.json()["function_uuid"]
    args = pack_buffers(["00\n" + "A" * 7_000_000, "00\n" + "B"])
    assert len(code) + len(args) < topo.MAX_PAYLOAD_SIZE

    r = _post_utf8(svc, f"/v3/endpoints/{ep}/submit", {"tasks": {fid: [args]}, "create_queue": True},
                   user.headers)
    assert r.status_code == 413, r.text
    body = r.json()
    assert body["code"] == "PAYLOAD_TOO_LARGE"
    assert f"{topo.MAX_MESSAGE_SIZE} byte" in body["message"] and "max_message_size" in body["message"]
    assert f"function {fid}" in body["message"]
    assert svc.count(Task, owner_id=user.id) == 0
    assert svc.broker.queue_depth(topo.task_queue(ep)) == 0
    # the same function with small arguments still runs through
    out = svc.submit(user, ep, fid, (1,))
    assert "warning" not in out and svc.count(Task, owner_id=user.id) == 1
    assert svc.broker.queue_depth(topo.task_queue(ep)) == 1


def quotes(n: int) -> str:
    return '"' * n


def double(x: int) -> int:
    return 2 * x


def test_result_over_the_broker_limit_fails_its_task_and_the_others_go_on(stack: dict[str, Any]) -> None:
    eh.configure("ep-bigresult", "engine: {type: ThreadPoolEngine, max_workers: 2}\n" + FAST)
    ep = eh.start("ep-bigresult")
    try:
        # JSONData writes each quote as \" (10 M characters: within the 10 MiB result limit);
        # the result message escapes each of those again: 20 MB
        with Executor(endpoint_id=ep.endpoint_id,
                      result_serializers=["globus_compute_sdk.serialize.JSONData"]) as ex:
            big = ex.submit(quotes, 5_000_000)
            small = [ex.submit(double, i) for i in range(5)]
            with pytest.raises(TaskExecutionFailed) as info:
                big.result(timeout=120)
            text = str(info.value)
            assert "MaxResultSizeExceeded" in text
            assert str(topo.MAX_MESSAGE_SIZE) in text and "max_message_size" in text
            assert [f.result(timeout=120) for f in small] == [0, 2, 4, 6, 8]
            assert ex.submit(double, 21).result(timeout=120) == 42
        store = ep.dir / "unacked_results"
        assert not store.exists() or not any(store.iterdir())  # nothing left to re-send
    finally:
        assert eh.stop(ep) == 0
