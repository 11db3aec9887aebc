"""The messagepack v1 envelope, in pure Python.

Every AMQP body in the system is ``0x01`` followed by compact JSON
``{"message_type": ..., "data": {...}}`` (docs/protocol.md, "Message bodies").  This is the
reference codec: ``volley._core`` implements the same functions in Rust and must produce the
same bytes, which the test suite checks on generated messages.

Field order and ``null`` handling follow upstream's pydantic models so that packed buffers are
byte-identical to ``globus_compute_common.messagepack.pack``.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

PROTOCOL_VERSION = 1
KINDS = ("task", "result", "ep_status_report")

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class InvalidMessageError(ValueError):
    """A body that is not a valid messagepack v1 message; the text names the field."""


@dataclass(frozen=True, slots=True)
class Message:
    """A decoded envelope, flattened so both codecs can return the same shape cheaply.

    ``data`` is ``Result.data`` for results and ``Task.task_buffer`` for tasks.  ``details``
    holds the JSON text of ``Result.details`` (or of ``EPStatusReport.global_state``);
    ``task_statuses`` the JSON text of the transitions.  They stay undecoded because most
    consumers never read them.
    """

    kind: str
    task_id: str | None = None
    endpoint_id: str | None = None
    data: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    details: str | None = None
    task_statuses: str | None = None

    @property
    def is_error(self) -> bool:
        return self.error_code is not None

    def details_dict(self) -> dict[str, Any] | None:
        return None if self.details is None else json.loads(self.details)


# the spellings pydantic accepts upstream (and the Rust codec): hyphenated 8-4-4-4-12 or 32 hex
# digits, optionally in braces or after "urn:uuid:"; uuid.UUID() alone is far more lenient
_UUID_FORMS = re.compile(
    r"(?:urn:uuid:)?(?:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|[0-9a-fA-F]{32}|\{[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\})"
)


def _canonical_uuid(value: Any, field: str) -> str:
    if isinstance(value, uuid.UUID):
        return str(value)
    if not isinstance(value, str):
        raise InvalidMessageError(f"field '{field}': expected a UUID string, got {type(value).__name__}")
    if _UUID_FORMS.fullmatch(value) is None:
        raise InvalidMessageError(f"field '{field}': {value!r} is not a valid UUID")
    return str(uuid.UUID(value))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _envelope(kind: str, data: str) -> bytes:
    return b"\x01" + ('{"message_type":"' + kind + '","data":' + data + "}").encode()


def pack_task(task_id: str | uuid.UUID, task_buffer: str) -> bytes:
    tid = _canonical_uuid(task_id, "task_id")
    return _envelope(
        "task",
        '{"task_id":"' + tid + '","container_id":null,"container":null,"task_buffer":'
        + _dumps(task_buffer) + "}",
    )


def escaped_size(text: str) -> int:
    """Bytes ``text`` takes inside a packed message: JSON-escaped, UTF-8, without quotes.
    Escapes are per character, so the size of a concatenation is the sum of its parts'."""
    return len(_dumps(text).encode()) - 2


# bytes of a task message besides its task_buffer's escaped_size
TASK_ENVELOPE_SIZE = len(pack_task(uuid.UUID(int=0), ""))


def check_result_fields(details: Any, task_statuses: Any) -> None:
    """The types :func:`pack_result` takes for ``details`` and ``task_statuses`` (any packer)."""
    if details is not None and not isinstance(details, dict):
        raise InvalidMessageError("result: field 'details' must be an object or null")
    if task_statuses is not None and not isinstance(task_statuses, list):
        raise InvalidMessageError("result: field 'task_statuses' must be a list or null")


def pack_result(
    task_id: str | uuid.UUID,
    data: str,
    *,
    error_code: str | None = None,
    error_message: str | None = None,
    details: dict[str, Any] | None = None,
    task_statuses: list[dict[str, Any]] | None = None,
) -> bytes:
    tid = _canonical_uuid(task_id, "task_id")
    check_result_fields(details, task_statuses)
    if error_code is None:
        err = "null"
    else:
        err = '{"code":' + _dumps(error_code) + ',"user_message":' + _dumps(error_message or "") + "}"
    return _envelope(
        "result",
        '{"task_id":"' + tid + '","data":' + _dumps(data)
        + ',"details":' + _dumps(details)
        + ',"error_details":' + err
        + ',"task_statuses":' + _dumps(task_statuses) + "}",
    )


def pack_status_report(
    endpoint_id: str | uuid.UUID,
    global_state: dict[str, Any],
    task_statuses: dict[str, list[dict[str, Any]]] | None = None,
) -> bytes:
    eid = _canonical_uuid(endpoint_id, "endpoint_id")
    if not isinstance(global_state, dict):
        raise InvalidMessageError("ep_status_report: field 'global_state' must be an object")
    return _envelope(
        "ep_status_report",
        '{"endpoint_id":"' + eid + '","global_state":' + _dumps(global_state)
        + ',"task_statuses":' + _dumps(task_statuses or {}) + "}",
    )


def _require(data: dict[str, Any], field: str, kind: str) -> Any:
    try:
        return data[field]
    except KeyError:
        raise InvalidMessageError(f"{kind}: missing required field '{field}'") from None


def _str_field(data: dict[str, Any], field: str, kind: str) -> str:
    value = _require(data, field, kind)
    if not isinstance(value, str):
        raise InvalidMessageError(f"{kind}: field '{field}' must be a string, got {type(value).__name__}")
    return value


def decode(body: bytes | bytearray | memoryview) -> Message:
    """Decode one packed message; raise :class:`InvalidMessageError` naming what is wrong.

    Nesting deeper than the interpreter's recursion limit (json raises RecursionError, not
    ValueError) is invalid too; the native codec stops at 128 levels (serde_json's limit)."""
    try:
        return _decode(body)
    except RecursionError:
        raise InvalidMessageError("body is not valid JSON: nested too deeply") from None


def _decode(body: bytes | bytearray | memoryview) -> Message:
    buf = bytes(body)
    if not buf:
        raise InvalidMessageError("empty message body")
    if buf[0] != PROTOCOL_VERSION:
        raise InvalidMessageError(f"unrecognized protocol version: {buf[0]} (expected 1)")
    try:
        # strict: UTF-8 only (json.loads(bytes) would also guess UTF-16/32), no NaN/Infinity
        env = json.loads(buf[1:].decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidMessageError(f"body is not valid JSON: {exc}") from None
    if not isinstance(env, dict):
        raise InvalidMessageError("envelope must be a JSON object")
    kind = env.get("message_type")
    if not isinstance(kind, str):
        raise InvalidMessageError("envelope: missing required field 'message_type'")
    data = env.get("data")
    if not isinstance(data, dict):
        raise InvalidMessageError("envelope: missing required field 'data' (an object)")

    if kind == "result":
        err = data.get("error_details")
        code = msg = None
        if err is not None:
            if not isinstance(err, dict):
                raise InvalidMessageError("result: field 'error_details' must be an object or null")
            code = _str_field(err, "code", "result.error_details")
            msg = _str_field(err, "user_message", "result.error_details")
        det = data.get("details")
        if det is not None and not isinstance(det, dict):
            raise InvalidMessageError("result: field 'details' must be an object or null")
        ts = data.get("task_statuses")
        if ts is not None and not isinstance(ts, list):
            raise InvalidMessageError("result: field 'task_statuses' must be a list or null")
        return Message(
            kind="result",
            task_id=_canonical_uuid(_require(data, "task_id", kind), "task_id"),
            data=_str_field(data, "data", kind),
            error_code=code,
            error_message=msg,
            details=None if det is None else _dumps(det),
            task_statuses=None if ts is None else _dumps(ts),
        )
    if kind == "task":
        return Message(
            kind="task",
            task_id=_canonical_uuid(_require(data, "task_id", kind), "task_id"),
            data=_str_field(data, "task_buffer", kind),
        )
    if kind == "ep_status_report":
        state = data.get("global_state", data.get("ep_status_report"))
        if not isinstance(state, dict):
            raise InvalidMessageError("ep_status_report: missing required field 'global_state' (an object)")
        ts = _require(data, "task_statuses", kind)
        if not isinstance(ts, dict):
            raise InvalidMessageError("ep_status_report: field 'task_statuses' must be an object")
        return Message(
            kind="ep_status_report",
            endpoint_id=_canonical_uuid(_require(data, "endpoint_id", kind), "endpoint_id"),
            details=_dumps(state),
            task_statuses=_dumps(ts),
        )
    raise InvalidMessageError(f"unknown message_type: {kind!r}")
