"""A task's outcome reads the same from the result stream and from the service's stored task
document (the REST path a watcher takes after an outage, while polling, and in reload_tasks):
cancelled is CancelledError, a failure is TaskExecutionFailed with the same text, and retry_on
retries only what the function raised, whichever way the result came."""

from __future__ import annotations

import concurrent.futures as cf
import uuid
from typing import Any

import pytest

from volley.errors import TaskExecutionFailed
from volley.protocol.codes import ResultCode
from volley.protocol.messages import decode, pack_result
from volley.sdk.future import ComputeFuture
from volley.sdk.outcome import resolve_document, resolve_message
from volley.sdk.retry import Retrying, RetryPolicy
from volley.serialize import ComputeSerializer

serializer = ComputeSerializer()
TRACEBACK = 'Traceback (most recent call last):\n  File "x.py", line 1, in f\nValueError: bad sample\n'


def _stored(tid: str, code: str | None, data: str) -> dict[str, Any]:
    """The service's document of a completed task, as the router stores it (routes/tasks.task_doc)."""
    if code is None:
        return {"task_id": tid, "status": "success", "completion_t": "1700000000.0", "details": {},
                "result": data}
    status = "cancelled" if code == ResultCode.TASK_CANCELLED else "failed"
    return {"task_id": tid, "status": status, "completion_t": "1700000000.0", "exception": data,
            "details": {"error_code": code, "error_message": "m"}}


def _outcome(fut: ComputeFuture) -> tuple[str, str]:
    if not fut.done():
        return ("pending", "")
    if fut.cancelled():
        return ("cancelled", "")
    exc = fut.exception()
    if exc is None:
        return ("value", repr(fut.result()))
    return (type(exc).__name__, str(exc))


def _with_retry(sent: list[str]) -> ComputeFuture:
    fut = ComputeFuture(str(uuid.uuid4()))
    fut._retry = Retrying(RetryPolicy((ValueError,), 2), lambda: sent.append("again"))
    return fut


CASES = [
    (None, serializer.serialize(41)),
    (ResultCode.REMOTE_EXECUTION_ERROR, TRACEBACK),
    (ResultCode.UNKNOWN_TASK_FAILURE, TRACEBACK),  # the engine lost it: not the function's error
    (ResultCode.COULD_NOT_EXECUTE, TRACEBACK),
    (ResultCode.TASK_CANCELLED, "cancelled on request"),
]


@pytest.mark.parametrize(("code", "data"), CASES, ids=[str(c) for c, _ in CASES])
@pytest.mark.parametrize("retrying", [False, True])
def test_the_stream_and_the_stored_document_give_the_same_outcome(code: str | None, data: str,
                                                                     retrying: bool) -> None:
    tid = str(uuid.uuid4())
    sent_stream: list[str] = []
    sent_stored: list[str] = []
    streamed = _with_retry(sent_stream) if retrying else ComputeFuture(tid)
    stored = _with_retry(sent_stored) if retrying else ComputeFuture(tid)
    msg = decode(pack_result(tid, data, error_code=code, error_message="m" if code else None))
    resolve_message(streamed, msg, 1700000000, serializer)
    assert resolve_document(stored, _stored(tid, code, data), serializer)
    assert sent_stored == sent_stream
    assert _outcome(stored)[0] == _outcome(streamed)[0]
    if code == ResultCode.TASK_CANCELLED:
        with pytest.raises(cf.CancelledError):
            stored.result(timeout=0)
    if code in (ResultCode.UNKNOWN_TASK_FAILURE, ResultCode.COULD_NOT_EXECUTE):
        assert sent_stored == []  # retry_on is for what the function raised
        with pytest.raises(TaskExecutionFailed, match="bad sample"):
            stored.result(timeout=0)


def test_a_document_of_an_unfinished_task_leaves_the_future_pending() -> None:
    fut = ComputeFuture(str(uuid.uuid4()))
    assert not resolve_document(fut, {"task_id": fut.task_id, "status": "waiting-for-ep"}, serializer)
    assert not fut.done()
