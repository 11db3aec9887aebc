"""``Batch``: many task submissions sent in one HTTP request (``POST /v3/endpoints/{id}/submit``, docs/service.md)."""

from __future__ import annotations

import platform
import sys
import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from volley.protocol.topology import MAX_PAYLOAD_SIZE
from volley.serialize import ComputeSerializer
from volley.version import __version__

_DEFAULT_SERIALIZER: ComputeSerializer | None = None


def _default_serializer() -> ComputeSerializer:
    global _DEFAULT_SERIALIZER
    if _DEFAULT_SERIALIZER is None:
        _DEFAULT_SERIALIZER = ComputeSerializer()
    return _DEFAULT_SERIALIZER


def as_optional_uuid(value: Any) -> uuid.UUID | None:
    if not value:
        return None
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)


def _is_uuid(value: Any) -> bool:
    if isinstance(value, uuid.UUID):
        return True
    try:
        uuid.UUID(value)
    except (TypeError, ValueError, AttributeError):
        return False
    return True


def as_uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


@dataclass
class UserRuntime:
    globus_compute_sdk_version: str
    globus_sdk_version: str
    python_version: str
    python: dict[str, Any] = field(default_factory=dict)
    platform: dict[str, Any] = field(default_factory=dict)


_RUNTIME: UserRuntime | None = None


def create_user_runtime() -> UserRuntime:
    global _RUNTIME
    if _RUNTIME is None:
        vi = sys.version_info
        _RUNTIME = UserRuntime(
            globus_compute_sdk_version=__version__,
            globus_sdk_version="",
            python_version=sys.version,
            python={
                "version": platform.python_version(),
                "version_description": sys.version,
                "version_tuple": [vi.major, vi.minor, vi.micro],
                "version_info": [vi.major, vi.minor, vi.micro, vi.releaselevel, vi.serial],
                "implementation": platform.python_implementation(),
                "compiler": platform.python_compiler(),
            },
            platform={
                "architecture": list(platform.architecture()),
                "machine": platform.machine(),
                "node": platform.node(),
                "platform": platform.platform(),
                "processor": platform.processor(),
                "release": platform.release(),
            },
        )
    return _RUNTIME


class Batch:
    """Tasks for one endpoint, grouped by function id, serialized as they are added."""

    def __init__(
        self,
        task_group_id: Any = None,
        resource_specification: dict[str, Any] | None = None,
        user_endpoint_config: dict[str, Any] | None = None,
        request_queue: bool = False,
        serializer: ComputeSerializer | None = None,
        user_runtime: UserRuntime | None = None,
        result_serializers: list[str] | None = None,
        max_retries_on_system_failure: int | None = None,
    ) -> None:
        self.task_group_id = task_group_id
        self.resource_specification = resource_specification
        self.user_endpoint_config = user_endpoint_config
        self.request_queue = request_queue
        self.serializer = serializer or _default_serializer()
        self.user_runtime = user_runtime
        self.result_serializers = result_serializers
        self.max_retries_on_system_failure = max_retries_on_system_failure
        self.tasks: defaultdict[uuid.UUID, list[str]] = defaultdict(list)
        self.endpoint_id: uuid.UUID | None = None

    @property
    def task_group_id(self) -> uuid.UUID | None:
        return self._task_group_id

    @task_group_id.setter
    def task_group_id(self, value: Any) -> None:
        self._task_group_id = as_optional_uuid(value)

    def add(self, function_id: Any, *positional: Any, args: Any = None, kwargs: Any = None,
            endpoint_id: Any = None) -> None:
        """``add(function_id, args=None, kwargs=None)``, as upstream 4.x; the user guide's older
        ``add(function_id, endpoint_id, args=...)`` form is accepted too (then ``batch_run(batch)``
        needs no endpoint)."""
        pos = list(positional)
        if pos and isinstance(pos[0], str | uuid.UUID) and _is_uuid(pos[0]):
            endpoint_id = pos.pop(0)
        if len(pos) > 2:
            raise TypeError(f"add() takes at most 3 positional arguments ({len(pos) + 1} given)")
        if pos:
            if args is not None:
                raise TypeError("add() got multiple values for argument 'args'")
            args = pos.pop(0)
        if pos:
            if kwargs is not None:
                raise TypeError("add() got multiple values for argument 'kwargs'")
            kwargs = pos.pop(0)
        if endpoint_id is not None:
            ep = as_uuid(endpoint_id)
            if self.endpoint_id is not None and ep != self.endpoint_id:
                raise ValueError(
                    f"a Batch goes to one endpoint: it already holds tasks for {self.endpoint_id}, not {ep}"
                )
            self.endpoint_id = ep
        self._add_task(function_id, args, kwargs)

    def _add_task(self, function_id: Any, args: Any, kwargs: Any) -> None:
        """The checks and serialization of ``add`` without its argument parsing; the Executor's
        submitter calls it per task with the function's ``uuid.UUID`` (so nothing is parsed)."""
        if args is None:
            args = ()
        if not isinstance(args, list | tuple):
            raise TypeError(f"args: expected `tuple`, got: {type(args).__name__}")
        if kwargs is None:
            kwargs = {}
        if not isinstance(kwargs, dict):
            raise TypeError(f"kwargs: expected dict, got: {type(kwargs).__name__}")
        if kwargs and not all(isinstance(k, str) for k in kwargs):
            raise TypeError(f"kwargs: expected kwargs with `str` keys, got: {type(kwargs).__name__}")
        fid = as_uuid(function_id)
        ser = self.serializer
        payload = ser.pack_buffers([ser.serialize(tuple(args)), ser.serialize(kwargs)])
        if len(payload) > MAX_PAYLOAD_SIZE:
            raise ValueError(
                f"Task payload of {len(payload)} characters (serialized arguments) exceeds the "
                f"{MAX_PAYLOAD_SIZE // (1024 * 1024)} MiB limit; nothing was sent. Pass large data by "
                "reference (a path or URL the endpoint can read) instead of as an argument."
            )
        self.tasks[fid].append(payload)

    def __len__(self) -> int:
        return sum(len(v) for v in self.tasks.values())

    def __bool__(self) -> bool:
        return all(self.tasks.values())

    def prepare(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "create_queue": self.request_queue,
            "tasks": {str(fid): list(payloads) for fid, payloads in self.tasks.items()},
        }
        if self.task_group_id:
            data["task_group_id"] = str(self.task_group_id)
        if self.resource_specification:
            data["resource_specification"] = self.resource_specification
        if self.user_endpoint_config:
            data["user_endpoint_config"] = self.user_endpoint_config
        if self.user_runtime:
            data["user_runtime"] = asdict(self.user_runtime)
        if self.result_serializers:
            data["result_serializers"] = list(self.result_serializers)
        if self.max_retries_on_system_failure is not None:  # Volley's own field
            data["max_retries_on_system_failure"] = self.max_retries_on_system_failure
        if self.request_queue:  # Volley's own: this SDK reads several results per message
            data["volley_result_batches"] = True
        return data

    def __repr__(self) -> str:
        return str(self.prepare())
