"""Run one packed task on a worker and return a packed ``Result`` (endpoint-protocol.md §7.6).

Pure Python on purpose: it runs inside worker processes (possibly forked or spawned), where the
native core must not be used.
"""

from __future__ import annotations

import os
import platform
import time
import traceback
from typing import Any

from volley.protocol.messages import InvalidMessageError, decode, pack_result
from volley.protocol.topology import MAX_PAYLOAD_SIZE
from volley.version import __version__


def _details(endpoint_id: str | None) -> dict[str, Any]:
    import dill

    return {
        "os": platform.system(),
        "dill_version": dill.__version__,
        "python_version": platform.python_version(),
        "volley_version": __version__,
        "endpoint_id": endpoint_id,
    }


def _transition(state: str) -> dict[str, Any]:
    return {"timestamp": time.time_ns(), "state": state, "actor": "worker"}


def execute_task(
    task_id: str,
    body: bytes,
    *,
    endpoint_id: str | None = None,
    run_dir: str | None = None,
    run_in_sandbox: bool = False,
    result_serializers: list[str] | None = None,
    change_dir: bool = True,
) -> bytes:
    from volley.errors import MaxResultSizeExceeded
    from volley.serialize import ComputeSerializer

    statuses = [_transition("execution-start")]
    os.environ.pop("GC_TASK_SANDBOX_DIR", None)
    os.environ["GC_TASK_UUID"] = task_id
    code, user_message = "RemoteExecutionError", "An error occurred during the execution of this task"
    try:
        if run_dir:
            workdir = os.path.join(run_dir, task_id) if run_in_sandbox else run_dir
            os.makedirs(workdir, exist_ok=True)
            if run_in_sandbox:
                os.environ["GC_TASK_SANDBOX_DIR"] = workdir
            if change_dir:
                os.chdir(workdir)
        try:
            msg = decode(body)
            if msg.kind != "task" or msg.data is None:
                raise InvalidMessageError(f"expected a task message, got {msg.kind!r}")
            fn, args, kwargs = ComputeSerializer().unpack_and_deserialize(msg.data)
        except Exception as exc:
            code, user_message = "CouldNotExecuteUserTaskError", f"remote error: {exc}"
            raise
        try:
            value = fn(*args, **kwargs)
        except Exception as exc:
            tb = exc.__traceback__
            data = "".join(traceback.format_exception(type(exc), exc, tb.tb_next if tb else None))
            statuses.append(_transition("execution-end"))
            return pack_result(task_id, data, error_code=code, error_message=user_message,
                               details=_details(endpoint_id), task_statuses=statuses)
        data = ComputeSerializer.serialize_from_list(value, result_serializers or [])
        if len(data) > MAX_PAYLOAD_SIZE:
            code = "MaxResultSizeExceeded"
            err = MaxResultSizeExceeded(len(data), MAX_PAYLOAD_SIZE)
            user_message = f"remote error: {err}"
            raise err
        statuses.append(_transition("execution-end"))
        return pack_result(task_id, data, details=_details(endpoint_id), task_statuses=statuses)
    except Exception as exc:
        statuses.append(_transition("execution-end"))
        data = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        if code == "RemoteExecutionError":
            code, user_message = "CouldNotExecuteUserTaskError", f"remote error: {exc!r}"
        return pack_result(task_id, data, error_code=code, error_message=user_message,
                           details=_details(endpoint_id), task_statuses=statuses)

