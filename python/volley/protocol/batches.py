"""Several results in one AMQP message: the result batch, spoken only between Volley's programs.

The broker's cost is per message (a persistent, confirmed publish; a delivery; an ack), and on a
busy endpoint it is the largest share of a task's CPU.  So an endpoint agent may put several
packed results into one message on the ``results`` exchange, when the service said at
registration that it reads them (``result_queue_info[CAPABILITY]`` is true).  An upstream
endpoint never sees the key and sends one result per message, which the service reads as before.

A batch message carries the header ``BATCH_HEADER`` (the number of results) and a body of frames,
each a 4-byte big-endian length and then that many bytes of one packed ``Result``, exactly as it
would have been sent alone.  The service stores and forwards each result on its own and settles
the message once for all of them (docs/protocol.md, "Result batches").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from volley.protocol.codec import InvalidMessageError, WireMessage

if TYPE_CHECKING:  # the transports' Delivery carries what this module splits
    from volley.transport.base import Delivery

__all__ = ("BATCH_HEADER", "CAPABILITY", "MAX_BATCH_BYTES", "BatchPart", "InvalidBatch", "Outgoing",
           "decode_batch", "messages_for", "pack_batch", "results_in", "unpack_batch")

BATCH_HEADER = "volley-batch"
CAPABILITY = "volley_result_batches"
# A batch holds results up to this many bytes in all (a larger result is sent alone): big enough
# that a burst of small results shares few messages, small enough that a batch requeued or
# dead-lettered whole stays cheap.
MAX_BATCH_BYTES = 1024 * 1024
_LENGTH = 4


class InvalidBatch(ValueError):
    """A batch message whose body or header does not follow the framing; the text says where."""


def pack_batch(bodies: Sequence[bytes]) -> bytes:
    """One batch body from packed results."""
    return b"".join(len(body).to_bytes(_LENGTH, "big") + body for body in bodies)


# (how many results it carries, body, headers): one message to publish
Outgoing = tuple[int, bytes, "dict[str, Any] | None"]


def messages_for(bodies: Sequence[bytes]) -> list[Outgoing]:
    """The messages that carry the packed results ``bodies``, in order: as many to a batch as fit
    in ``MAX_BATCH_BYTES``; a result alone (or larger than that) as a plain message, which any
    reader takes."""
    groups: list[list[bytes]] = []
    size = MAX_BATCH_BYTES
    for body in bodies:
        if size + len(body) > MAX_BATCH_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(body)
        size += len(body)
    return [(1, group[0], None) if len(group) == 1 else (len(group), pack_batch(group), {BATCH_HEADER: len(group)})
            for group in groups]


# one result of a batch as a consumer hands it out: its packed body, and the decoded message
# or why it is invalid (the native consumer makes these off the GIL)
BatchPart = tuple[bytes, "WireMessage | None", "str | None"]


def decode_batch(body: bytes, count: object, decode: Callable[[bytes], WireMessage]) -> list[BatchPart]:
    """Split a batch body (raising :class:`InvalidBatch`) and decode each result with ``decode``
    (what the pure-Python consumer does; the native one does the same in Rust)."""
    parts: list[BatchPart] = []
    for part in unpack_batch(body, count):
        try:
            parts.append((part, decode(part), None))
        except InvalidMessageError as exc:
            parts.append((part, None, str(exc)))
    return parts


def results_in(d: Delivery) -> tuple[list[tuple[bytes, WireMessage]], list[str]]:
    """The results a delivery carries, ``(packed body, decoded message)`` each: itself, or each
    result of a batch; and why any of it is refused (not a result, not decodable, a malformed
    batch)."""
    m = d.message
    if m is not None and m.kind == "result":
        return [(d.body, m)], []
    parts = d.batch
    if parts is None:
        if d.headers and BATCH_HEADER in d.headers:
            return [], [d.invalid or "a result batch its consumer did not decode"]
        return [], [d.invalid or f"a {m.kind if m else None!r} message is not a result"]
    results: list[tuple[bytes, WireMessage]] = []
    refused: list[str] = []
    for i, (body, part, invalid) in enumerate(parts, 1):
        if part is None or part.kind != "result":
            why = invalid or f"a {part.kind if part else None!r} message is not a result"
            refused.append(f"result {i} of {len(parts)} in the batch: {why}")
            continue
        results.append((body, part))
    return results, refused


def unpack_batch(body: bytes, count: object) -> list[bytes]:
    """The packed results of a batch message, whose ``BATCH_HEADER`` said ``count``."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InvalidBatch(f"header {BATCH_HEADER!r} must be a positive integer, got {count!r}")
    view = memoryview(body)
    parts: list[bytes] = []
    pos = 0
    while pos < len(view):
        if len(parts) == count:
            raise InvalidBatch(f"{len(view) - pos} bytes follow the {count} result(s) the header announced")
        if pos + _LENGTH > len(view):
            raise InvalidBatch(f"result {len(parts) + 1}: the length is cut off at byte {pos}")
        size = int.from_bytes(view[pos : pos + _LENGTH], "big")
        start = pos + _LENGTH
        if start + size > len(view):
            raise InvalidBatch(f"result {len(parts) + 1}: declares {size} bytes but only {len(view) - start} remain")
        parts.append(bytes(view[start : start + size]))
        pos = start + size
    if len(parts) != count:
        raise InvalidBatch(f"the header announced {count} result(s), the body holds {len(parts)}")
    return parts
