"""How a task's outcome becomes its future's outcome: one reading of a result, whether it came
as a wire message on the result stream or as a stored task document from the service's REST API
(``/v2/batch_status``, ``/v2/tasks/{id}``).  Both paths give the same answer for the same task:
a cancelled task's future is cancelled, a failure is a ``TaskExecutionFailed``, and
``retry_on`` retries only what the function itself raised (the error code says which)."""

from __future__ import annotations

import logging
from typing import Any

from volley.protocol.codes import ResultCode

log = logging.getLogger("volley.sdk.watcher")

_CANCELLED = ResultCode.TASK_CANCELLED
_USER_ERROR = ResultCode.REMOTE_EXECUTION_ERROR


def resolve_message(fut: Any, msg: Any, timestamp: int | None, serializer: Any) -> None:
    """Resolve ``fut`` from a decoded ``Result`` message of the stream."""
    # No done() check first: set_result/set_exception on a future the user cancelled raise
    # InvalidStateError, caught below, and the common case saves a lock round trip.
    try:
        if msg.is_error:
            _fail(fut, msg.data, msg.error_code, str(timestamp or 0))
        else:
            _succeed(fut, msg.data, serializer)
    except Exception:  # InvalidStateError: cancelled by the user; the result is dropped
        log.debug("future %s was cancelled or resolved already", fut.task_id)


def resolve_document(fut: Any, doc: dict[str, Any], serializer: Any) -> bool:
    """Resolve ``fut`` from the service's document of its task; False (and ``fut`` untouched)
    while the task is not complete."""
    if not doc.get("completion_t"):
        return False
    try:
        status = doc.get("status")
        if status == "success":
            _succeed(fut, doc.get("result"), serializer)
        else:
            code: str | None = (doc.get("details") or {}).get("error_code")
            if status == "cancelled":
                code = _CANCELLED
            elif code is None:
                # a service that keeps no error code (upstream's): a matching type is taken as
                # raised by the function, the one case retry_on is for
                code = _USER_ERROR
            _fail(fut, doc.get("exception") or "", code, str(doc.get("completion_t")))
    except Exception:  # InvalidStateError: cancelled by the user
        log.debug("future %s was cancelled or resolved already", fut.task_id)
    return True


def _succeed(fut: Any, data: Any, serializer: Any) -> None:
    try:
        value = serializer.deserialize(data)
    except Exception as exc:
        err = Exception(f"Malformed or unexpected data structure. Data: {data}")
        err.__cause__ = exc
        fut.set_exception(err)
    else:
        fut.set_result(value)


def _fail(fut: Any, data: str, code: str | None, completion_t: str) -> None:
    if code == _CANCELLED:
        fut._cancel_here()
        return
    if fut._retry is not None:
        retried = fut._retry.failed(data, code == _USER_ERROR)
        if retried is None:
            return  # sent again: the same future resolves with a later attempt
        data = retried
    fut.set_exception(_task_failed()(data, completion_t))


def _task_failed() -> type[Exception]:
    """``volley.errors.TaskExecutionFailed``, imported once (a function-level import costs a
    lookup per result)."""
    global _TASK_FAILED
    if _TASK_FAILED is None:
        from volley.errors import TaskExecutionFailed

        _TASK_FAILED = TaskExecutionFailed
    return _TASK_FAILED


_TASK_FAILED: type[Exception] | None = None
