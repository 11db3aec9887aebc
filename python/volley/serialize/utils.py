"""Length-prefixed framing of serialized buffers.

A frame is ``f"{len(buffer)}\\n{buffer}"``; frames are simply concatenated.  The length is the
*character* count of the Python string (not a byte count), exactly as the Globus Compute SDK
does, so packed strings cross between the two implementations unchanged.  Function code is one
frame, a task payload is ``[args, kwargs]``, and the body an endpoint runs is
``[function, args, kwargs]``.
"""

from __future__ import annotations

import typing as t

__all__ = ("pack_buffers", "unpack_buffers")


def pack_buffers(buffers: t.Iterable[str]) -> str:
    """Frame each buffer with its length and concatenate the frames."""
    return "".join([f"{len(buf)}\n{buf}" for buf in buffers])


def unpack_buffers(packed_buffer: str) -> list[str]:
    """Split a string made by :func:`pack_buffers` back into its buffers.

    Raises ``ValueError`` on malformed input: a missing newline after a length, a length that
    is not an integer or is negative, or a frame that runs past the end of the string.
    """
    # Walk with indices: slicing the remainder on each step would copy it every time.
    buffers: list[str] = []
    end = len(packed_buffer)
    pos = 0
    while pos < end:
        newline = packed_buffer.find("\n", pos)
        if newline < 0:
            raise ValueError("Missing newline delimiter")
        delimiter = packed_buffer[pos:newline]
        try:
            length = int(delimiter)
        except ValueError as e:
            raise ValueError(f"Invalid length delimiter: {delimiter}") from e
        if length < 0:
            raise ValueError(f"Length delimiter must be non-negative: {length}")
        start = newline + 1
        remaining = end - start
        if remaining < length:
            raise ValueError(
                f"Truncated buffer: expected {length} characters, but only"
                f" {remaining} characters remain"
            )
        pos = start + length
        buffers.append(packed_buffer[start:pos])
    return buffers
