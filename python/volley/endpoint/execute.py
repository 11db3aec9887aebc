"""Run one packed task on a worker and return a packed ``Result`` (docs/protocol.md, "Results").

It runs inside worker processes (spawned pool workers, Parsl workers): it uses the codec's pure
functions (native or not, they start no runtime) and never a broker connection.  It never
raises: every failure becomes an error Result, so an exception out of a worker always means the
worker itself was lost.
"""

from __future__ import annotations

import functools
import os
import platform
import time
import traceback
from typing import Any

from volley.protocol.codec import InvalidMessageError, decode, pack_result
from volley.protocol.codes import ResultCode
from volley.protocol.topology import MAX_PAYLOAD_SIZE
from volley.version import __version__


class CouldNotExecuteUserTaskError(Exception):
    """The task message or its payload could not be turned into a call."""


@functools.cache
def _platform() -> tuple[str, str, str]:
    import dill

    return platform.system(), dill.__version__, platform.python_version()


def _details(endpoint_id: str | None) -> dict[str, Any]:
    os_name, dill_version, python_version = _platform()
    return {
        "os": os_name,
        "dill_version": dill_version,
        "python_version": python_version,
        "volley_version": __version__,
        "endpoint_id": endpoint_id,
    }


def _transition(state: str) -> dict[str, Any]:
    return {"timestamp": time.time_ns(), "state": state, "actor": "worker"}


def _user_traceback(exc: BaseException) -> str:
    # drop our own frame: the user's traceback starts at their function
    tb = exc.__traceback__
    return "".join(traceback.format_exception(type(exc), exc, tb.tb_next if tb else None))


def _enter_working_dir(task_id: str, run_dir: str | None, run_in_sandbox: bool, change_dir: bool) -> None:
    os.environ.pop("GC_TASK_SANDBOX_DIR", None)
    os.environ["GC_TASK_UUID"] = task_id
    if not run_dir or not (run_in_sandbox or change_dir):
        return  # nothing to create or enter (the engine made run_dir when it started)
    workdir = os.path.join(run_dir, task_id) if run_in_sandbox else run_dir
    os.makedirs(workdir, exist_ok=True)
    if run_in_sandbox:
        os.environ["GC_TASK_SANDBOX_DIR"] = workdir
    if change_dir:
        os.chdir(workdir)


def execute_task(
    task_id: str,
    body: bytes,
    *,
    endpoint_id: str | None = None,
    run_dir: str | None = None,
    run_in_sandbox: bool = False,
    result_serializers: list[str] | None = None,
    allowed_serializers: list[str] | None = None,
    change_dir: bool = True,
) -> bytes:
    from volley.errors import MaxResultSizeExceeded
    from volley.serialize import ComputeSerializer

    statuses = [_transition("execution-start")]

    def error(data: str, code: str, user_message: str) -> bytes:
        statuses.append(_transition("execution-end"))
        return pack_result(task_id, data, error_code=code, error_message=user_message,
                           details=_details(endpoint_id), task_statuses=statuses)

    try:
        _enter_working_dir(task_id, run_dir, run_in_sandbox, change_dir)
        msg = decode(body)
        if msg.kind != "task" or msg.data is None:
            raise InvalidMessageError(f"expected a task message, got {msg.kind!r}")
        fn, args, kwargs = ComputeSerializer(
            allowed_deserializer_types=allowed_serializers
        ).unpack_and_deserialize(msg.data)
    except Exception as exc:
        err = CouldNotExecuteUserTaskError(f"{type(exc).__name__}: {exc}")
        return error(repr(err), ResultCode.COULD_NOT_EXECUTE, f"remote error: {err}")

    try:
        value = fn(*args, **kwargs)
    except Exception as exc:
        return error(_user_traceback(exc), ResultCode.REMOTE_EXECUTION_ERROR,
                     "An error occurred during the execution of this task")

    try:
        data = ComputeSerializer.serialize_from_list(value, result_serializers or [])
    except Exception as exc:
        # the traceback includes the ExceptionGroup with every strategy's failure
        return error("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
                     ResultCode.REMOTE_EXECUTION_ERROR, "An error occurred during the execution of this task")
    if len(data) > MAX_PAYLOAD_SIZE:
        too_big = MaxResultSizeExceeded(len(data), MAX_PAYLOAD_SIZE)
        return error(repr(too_big), ResultCode.MAX_RESULT_SIZE_EXCEEDED, f"remote error: {too_big}")
    statuses.append(_transition("execution-end"))
    return pack_result(task_id, data, details=_details(endpoint_id), task_statuses=statuses)


def run_parsl_task(
    buffer: bytes,
    task_id: str,
    *,
    mpi: dict[str, Any] | None = None,
    **kwargs: Any,
) -> bytes:
    """Parsl's ``task_executor`` hook: the HTEX worker calls ``f(buffer, *a, **k)``."""
    if mpi is not None:
        from volley.endpoint.engines.mpi import prepare_mpi_env

        prepare_mpi_env(mpi["spec"], mpi["launcher"], mpi["flavor"])
    return execute_task(task_id, buffer, **kwargs)
