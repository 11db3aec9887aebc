"""The native transport: ``volley._core`` already implements the interface; this only opens it."""

from __future__ import annotations

from typing import Any

from volley import _core
from volley.transport.base import Consumer, Publisher


def open_consumer(url: str, queue: str, **kwargs: Any) -> Consumer:
    return _core.Consumer(url, queue, **kwargs)


def open_publisher(url: str, **kwargs: Any) -> Publisher:
    return _core.Publisher(url, **kwargs)
