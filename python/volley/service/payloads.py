"""Cheap structural checks of the serialized strings the service passes through untouched.

The service never deserializes user data, but it can tell at once whether a string is the
packed-buffer framing the endpoint will split (``"<len>\\n<buffer>"`` repeated, each buffer
starting with a two-character strategy id and a newline).  Rejecting a malformed one here gives
the caller a 422 instead of a task that can only fail on the endpoint.
"""

from __future__ import annotations

import re

from volley.serialize.utils import pack_buffers

# ASCII digits only: str.isdigit() also accepts "²" (int() raises) and "٣" (int() reads 3)
_LENGTH = re.compile(r"[0-9]+")


class MalformedPayload(ValueError):
    pass


def count_frames(packed: str) -> int:
    """Number of frames in ``packed``; raises :class:`MalformedPayload` naming the problem.
    Walks indices only, so a 10 MiB payload is not copied."""
    pos, end, frames = 0, len(packed), 0
    while pos < end:
        newline = packed.find("\n", pos, pos + 21)
        if newline < 0:
            raise MalformedPayload(f"frame {frames + 1}: no '<length>\\n' header at offset {pos}")
        header = packed[pos:newline]
        if _LENGTH.fullmatch(header) is None:
            raise MalformedPayload(
                f"frame {frames + 1}: length {header[:20]!r} is not a number (ASCII digits 0-9)"
            )
        start, length = newline + 1, int(header)
        if start + length > end:
            raise MalformedPayload(
                f"frame {frames + 1}: declares {length} characters but only {end - start} remain"
            )
        if length < 3 or packed[start + 2] != "\n":
            raise MalformedPayload(f"frame {frames + 1}: does not start with a serializer id line")
        pos = start + length
        frames += 1
    return frames


def check_frames(packed: str, expected: int, what: str) -> None:
    try:
        n = count_frames(packed)
    except MalformedPayload as exc:
        raise MalformedPayload(f"{what} is not a packed buffer: {exc}") from None
    if n != expected:
        raise MalformedPayload(f"{what} must hold {expected} packed buffer(s), found {n}")


def source_to_function_code(name: str, source: str) -> str:
    """Raw source from ``register_source_code`` as the framed PureSourceTextInspect payload an
    endpoint can load (what pre-4.19 SDKs sent themselves)."""
    return pack_buffers([f"st\n{name}:{source}"])
