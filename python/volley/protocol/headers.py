"""The AMQP headers of a task message: their names, how the service writes them, how an
endpoint reads them.  The body (the packed task) carries the task id too; the headers carry
what an endpoint needs before it unpacks anything."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

FUNCTION_UUID = "function_uuid"
TASK_UUID = "task_uuid"
# JSON text of the submission's resource specification (an object); absent when empty
RESOURCE_SPECIFICATION = "resource_specification"
# import paths of the serialization strategies to try for the result, in order
RESULT_SERIALIZERS = "result_serializers"
# an integer: how often a task whose worker (or endpoint) died runs again, overriding the
# endpoint's engine setting; absent: the endpoint's setting decides (upstream SDKs send none)
MAX_RETRIES_ON_SYSTEM_FAILURE = "max_retries_on_system_failure"
# the largest override accepted: a task that kills its worker every time must not occupy the
# endpoint for long (the endpoint's own setting is not bounded by this)
MAX_SYSTEM_RETRIES = 10


def submission_headers(
    resource_specification: dict[str, Any] | None, result_serializers: list[str] | None,
    max_retries_on_system_failure: int | None = None,
) -> dict[str, Any]:
    """The headers every task message of one submission carries besides its own ids."""
    common: dict[str, Any] = {}
    if resource_specification:
        common[RESOURCE_SPECIFICATION] = json.dumps(resource_specification)
    if result_serializers:
        common[RESULT_SERIALIZERS] = list(result_serializers)
    if max_retries_on_system_failure is not None:
        common[MAX_RETRIES_ON_SYSTEM_FAILURE] = int(max_retries_on_system_failure)
    return common


def task_headers(function_id: str, task_id: str, common: dict[str, Any]) -> dict[str, Any]:
    """One task message's headers: its ids and its submission's ``common`` headers."""
    return {FUNCTION_UUID: function_id, TASK_UUID: task_id, **common}


@dataclass(frozen=True)
class TaskHeaders:
    """What an endpoint read from a task message's headers; ``problems`` lists every header that
    was missing or malformed (the task is then answered with an error, not run)."""

    function_id: str | None
    resource_specification: dict[str, Any] = field(default_factory=dict)
    result_serializers: list[str] | None = None
    # the submission's override of the endpoint's max_retries_on_system_failure, or None
    max_retries: int | None = None
    problems: tuple[str, ...] = ()


def parse_task_headers(headers: dict[str, Any], task_id: str) -> TaskHeaders:
    """Read a task message's headers, which come from the broker and are not trusted."""
    problems = []
    fid = headers.get(FUNCTION_UUID)
    if not fid:
        problems.append(f"missing header '{FUNCTION_UUID}'")
    tid = headers.get(TASK_UUID)
    if not tid:
        problems.append(f"missing header '{TASK_UUID}'")
    elif str(tid) != task_id:
        problems.append(f"header {TASK_UUID} {tid!r} does not match the task id {task_id} in the body")
    spec: Any = headers.get(RESOURCE_SPECIFICATION)
    if isinstance(spec, bytes):
        spec = spec.decode(errors="replace")
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except (ValueError, RecursionError) as exc:  # a deeply nested header, too
            problems.append(f"header '{RESOURCE_SPECIFICATION}' is not JSON: {exc}")
            spec = None
    if spec is not None and not isinstance(spec, dict):
        problems.append(f"header '{RESOURCE_SPECIFICATION}' must be a JSON object, got {spec!r}")
        spec = None
    serializers = headers.get(RESULT_SERIALIZERS)
    if serializers is not None and (
        not isinstance(serializers, list) or not all(isinstance(s, (str, bytes)) for s in serializers)
    ):
        problems.append(f"header '{RESULT_SERIALIZERS}' must be a list of import paths, got {serializers!r}")
        serializers = None
    if serializers:
        serializers = [s.decode() if isinstance(s, bytes) else s for s in serializers]
    retries = headers.get(MAX_RETRIES_ON_SYSTEM_FAILURE)
    if retries is not None and (
        isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_SYSTEM_RETRIES
    ):
        problems.append(f"header '{MAX_RETRIES_ON_SYSTEM_FAILURE}' must be an integer from 0 to "
                        f"{MAX_SYSTEM_RETRIES}, got {retries!r:.100}")
        retries = None
    return TaskHeaders(str(fid) if fid else None, spec or {}, serializers or None, retries, tuple(problems))
