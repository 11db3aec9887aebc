"""Structural checks of the serialized strings the service passes through untouched.

The service never deserializes user data, but it can tell at once whether a string follows the
framing the endpoint will split (:mod:`volley.protocol.framing`, read strictly).  Rejecting a
malformed one here gives the caller a 422 instead of a task that can only fail on the endpoint.
"""

from __future__ import annotations

from volley.protocol.framing import MalformedPayload, check_frames, count_frames, pack_buffers
from volley.serialize.concretes import PureSourceTextInspect

__all__ = ("MalformedPayload", "check_frames", "count_frames", "source_to_function_code")


def source_to_function_code(name: str, source: str) -> str:
    """Raw source from ``register_source_code`` as the framed PureSourceTextInspect payload an
    endpoint can load (what pre-4.19 SDKs sent themselves)."""
    return pack_buffers([PureSourceTextInspect.frame(name, source)])
