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

from collections.abc import Sequence

__all__ = ("BATCH_HEADER", "CAPABILITY", "MAX_BATCH_BYTES", "InvalidBatch", "pack_batch", "unpack_batch")

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
