"""Control notices the service sends an endpoint on its control queue (docs/protocol.md,
"Control notices").  Volley's own extension: upstream endpoints never consume that queue.

A body is the protocol version byte ``0x01`` and compact UTF-8 JSON
``{"message_type": "cancel", "data": {"task_ids": [...], "force": false}}``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

VERSION = b"\x01"
CANCEL = "cancel"
# A key of a Volley endpoint's status report: true when, on starting, the endpoint applies the
# notices waiting in its control queue (and its record of cancels) before it runs any task.  A
# final report (``active`` false) that carries it tells the service that no task of that
# endpoint can run before a cancel sent now is applied.
CANCELS_FIRST = "volley_cancels_first"


@dataclass(frozen=True)
class CancelNotice:
    task_ids: list[str]
    force: bool


def pack_cancel(task_ids: list[str], force: bool) -> bytes:
    data = {"message_type": CANCEL, "data": {"task_ids": list(task_ids), "force": bool(force)}}
    return VERSION + json.dumps(data, separators=(",", ":")).encode()


def parse_control(body: bytes) -> CancelNotice:
    """The notice in ``body``; ``ValueError`` naming what is wrong otherwise."""
    if body[:1] != VERSION:
        raise ValueError(f"control notice: expected version byte 0x01, got {body[:1]!r}")
    try:
        doc = json.loads(body[1:])
    except ValueError as exc:
        raise ValueError(f"control notice: not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("message_type") != CANCEL or not isinstance(doc.get("data"), dict):
        raise ValueError("control notice: expected {\"message_type\": \"cancel\", \"data\": {...}}")
    ids, force = doc["data"].get("task_ids"), doc["data"].get("force", False)
    if not isinstance(ids, list) or not isinstance(force, bool):
        raise ValueError("control notice: data needs task_ids (a list) and force (a boolean)")
    try:
        return CancelNotice([str(uuid.UUID(str(t))) for t in ids], force)
    except ValueError:
        raise ValueError("control notice: task_ids must be UUIDs") from None
