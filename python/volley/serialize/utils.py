"""Length-prefixed framing of serialized buffers (upstream's ``serialize.utils`` names).

The format and its one parser live in :mod:`volley.protocol.framing`; this module keeps the
names user code imports from the serializer package.
"""

from __future__ import annotations

from volley.protocol.framing import pack_buffers, unpack_buffers

__all__ = ("pack_buffers", "unpack_buffers")
