"""The length-prefixed framing of serialized buffers: the one parser.

A frame is ``f"{len(buffer)}\\n{buffer}"``; frames are concatenated.  The length counts the
*characters* of the Python string (not bytes), as upstream's SDK does, so packed strings cross
between the two implementations unchanged.  Function code is one frame, a task payload two
(``[args, kwargs]``), and the body an endpoint runs three (``[function, args, kwargs]``).  Each
buffer starts with its serializer's two-character id and a newline (``"01\\n..."``).

Two readings of the same format, from one walk (:func:`frame_spans`):

* **lenient** (:func:`unpack_buffers`, the SDK and the endpoint): a length is whatever ``int()``
  reads, with upstream's error texts, so both SDKs accept and refuse the same strings;
* **strict** (:func:`count_frames`, the service checking untrusted requests): ASCII digits only
  (``int()`` reads "٣" as 3 and refuses "²"), at most 20 of them, and every buffer must start
  with a serializer id line.  Errors are :class:`MalformedPayload` naming the frame.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

__all__ = ("MalformedPayload", "check_frames", "count_frames", "frame_spans", "pack_buffers", "unpack_buffers")

# a serializer id is two characters and a newline: "01\n", "st\n"
ID_LENGTH = 3
_ASCII_LENGTH = re.compile(r"[0-9]{1,20}")


class MalformedPayload(ValueError):
    """A packed string that does not follow the framing; the text names the frame and the fault."""


def pack_buffers(buffers: Iterable[str]) -> str:
    """Frame each buffer with its length and concatenate the frames."""
    return "".join([f"{len(buf)}\n{buf}" for buf in buffers])


def frame_spans(packed: str, *, strict: bool = False) -> Iterator[tuple[int, int]]:
    """Yield ``(start, end)`` of each buffer in ``packed``.  Walks indices only, so a 10 MiB
    payload is never copied.  Raises ``ValueError`` (lenient, upstream's texts) or
    :class:`MalformedPayload` (strict)."""
    pos, end, frame = 0, len(packed), 0
    while pos < end:
        frame += 1
        newline = packed.find("\n", pos, pos + 21) if strict else packed.find("\n", pos)
        if newline < 0:
            if strict:
                raise MalformedPayload(f"frame {frame}: no '<length>\\n' header at offset {pos}")
            raise ValueError("Missing newline delimiter")
        header = packed[pos:newline]
        if strict:
            if _ASCII_LENGTH.fullmatch(header) is None:
                raise MalformedPayload(f"frame {frame}: length {header[:20]!r} is not a number (ASCII digits 0-9)")
            length = int(header)
        else:
            try:
                length = int(header)
            except ValueError as exc:
                raise ValueError(f"Invalid length delimiter: {header}") from exc
            if length < 0:
                raise ValueError(f"Length delimiter must be non-negative: {length}")
        start = newline + 1
        if start + length > end:
            if strict:
                raise MalformedPayload(f"frame {frame}: declares {length} characters but only {end - start} remain")
            raise ValueError(
                f"Truncated buffer: expected {length} characters, but only {end - start} characters remain"
            )
        pos = start + length
        yield start, pos


def unpack_buffers(packed: str) -> list[str]:
    """The buffers of a string made by :func:`pack_buffers` (lenient reading)."""
    return [packed[start:stop] for start, stop in frame_spans(packed)]


def count_frames(packed: str) -> int:
    """The number of frames in an untrusted ``packed`` string (strict reading); each buffer
    must start with a serializer id line."""
    frames = 0
    for start, stop in frame_spans(packed, strict=True):
        frames += 1
        if stop - start < ID_LENGTH or packed[start + ID_LENGTH - 1] != "\n":
            raise MalformedPayload(f"frame {frames}: does not start with a serializer id line")
    return frames


def check_frames(packed: str, expected: int, what: str) -> None:
    """Raise :class:`MalformedPayload` unless ``packed`` holds exactly ``expected`` frames."""
    try:
        n = count_frames(packed)
    except MalformedPayload as exc:
        raise MalformedPayload(f"{what} is not a packed buffer: {exc}") from None
    if n != expected:
        raise MalformedPayload(f"{what} must hold {expected} packed buffer(s), found {n}")
