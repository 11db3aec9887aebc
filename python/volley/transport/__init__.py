"""Choose and open a transport.

``native`` (the default) is the Rust core, ``volley._core``; ``python`` is the pika fallback and
benchmark baseline.  Selection: the explicit argument, else ``$VOLLEY_TRANSPORT``, else native.
When the compiled module cannot load, native falls back to python with a warning.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from volley.transport.base import (
    ChannelClosedError,
    Consumer,
    Delivery,
    Publisher,
    PublishTimeoutError,
    TransportError,
)

__all__ = [
    "ChannelClosedError",
    "Consumer",
    "Delivery",
    "PublishTimeoutError",
    "Publisher",
    "TransportError",
    "native_available",
    "open_consumer",
    "open_publisher",
    "resolve",
]

TRANSPORTS = ("native", "python")
_native_error: str | None = None
_warned = False


def native_available() -> bool:
    global _native_error
    try:
        import volley._core  # noqa: F401
    except ImportError as exc:
        _native_error = str(exc)
        return False
    return True


def resolve(name: str | None = None) -> str:
    """Return the transport to use: ``"native"`` or ``"python"``."""
    global _warned
    chosen = (name or os.environ.get("VOLLEY_TRANSPORT") or "native").strip().lower()
    if chosen not in TRANSPORTS:
        raise ValueError(
            f"unknown transport {chosen!r}: expected one of {', '.join(TRANSPORTS)} "
            "(set by transport=... or $VOLLEY_TRANSPORT)"
        )
    if chosen == "native" and not native_available():
        if not _warned:
            warnings.warn(
                f"volley._core could not be loaded ({_native_error}); using the pure-Python "
                "transport. Rebuild with `make setup` to get the native one.",
                RuntimeWarning,
                stacklevel=2,
            )
            _warned = True
        chosen = "python"
    return chosen


def open_consumer(url: str, queue: str, *, transport: str | None = None, **kwargs: Any) -> Consumer:
    """Open a consumer on ``queue``; kwargs: ca_file, port, prefetch, exclusive, decode."""
    if resolve(transport) == "native":
        from volley.transport import native

        return native.open_consumer(url, queue, **kwargs)
    from volley.transport import pika_transport

    return pika_transport.PikaConsumer(url, queue, **kwargs)


def open_publisher(url: str, *, transport: str | None = None, **kwargs: Any) -> Publisher:
    """Open a confirming publisher; kwargs: ca_file, port, confirms."""
    if resolve(transport) == "native":
        from volley.transport import native

        return native.open_publisher(url, **kwargs)
    from volley.transport import pika_transport

    return pika_transport.PikaPublisher(url, **kwargs)
