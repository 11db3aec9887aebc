"""Strategy base classes and the process-wide registry of strategies by identifier.

A serialized value is a text string whose first three characters identify the strategy that
made it: two characters and a newline (``"00\\n"``, ``"st\\n"``, ...).  Defining a subclass
with an ``identifier`` registers one shared instance of it; the deserializer finds the strategy
for a payload by its header alone.
"""

from __future__ import annotations

import logging
import typing as t
from abc import ABC, abstractmethod

from volley.errors import DeserializationError, SerializationError
from volley.serialize.utils import pack_buffers, unpack_buffers

__all__ = ("IDENTIFIER_LENGTH", "ComboSerializationStrategy", "SerializationStrategy")

logger = logging.getLogger(__name__)

#: Two identifying characters followed by ``"\n"``.
IDENTIFIER_LENGTH = 3


class SerializationStrategy(ABC):
    """Turns Python objects into text and back.

    A strategy is either for *code* (callables: functions, objects with ``__call__``) or for
    *data* (everything else, e.g. task arguments), never both.
    """

    #: Identifier -> the single registered instance of each strategy class.
    _CACHE: t.ClassVar[dict[str, SerializationStrategy]] = {}

    #: Unique three-character header: two characters, then ``"\n"``.
    identifier: t.ClassVar[str]
    #: ``True`` for strategies that handle callables, ``False`` for data.
    for_code: t.ClassVar[bool]

    def __init_subclass__(cls, **kwargs: t.Any) -> None:
        super().__init_subclass__(**kwargs)
        identifier = getattr(cls, "identifier", None)
        if identifier is None:
            # An intermediate base (e.g. ComboSerializationStrategy): nothing to register.
            return
        if len(identifier) != IDENTIFIER_LENGTH:
            raise ValueError(f"Identifiers must be {IDENTIFIER_LENGTH} characters long")
        if identifier[-1] != "\n":
            raise ValueError("Identifiers must end with a newline character")
        existing = SerializationStrategy._CACHE.get(identifier)
        if existing is not None:
            raise ValueError(
                f"Identifier {identifier!r} is already used by {type(existing).__name__}"
            )
        SerializationStrategy._CACHE[identifier] = cls()

    @classmethod
    def get_cached_by_id(cls, identifier: str) -> SerializationStrategy | None:
        """The registered instance for a header such as ``"00\\n"``, or ``None``."""
        return cls._CACHE.get(identifier)

    @classmethod
    def get_cached_by_class(cls, type_: type[SerializationStrategy]) -> SerializationStrategy:
        """The registered instance of a strategy class (``KeyError`` if unregistered)."""
        return cls._CACHE[type_.identifier]

    @abstractmethod
    def serialize(self, data: t.Any) -> str:
        """Return the text form of ``data``, starting with this strategy's identifier.

        May raise if this strategy cannot handle the object.
        """

    @abstractmethod
    def deserialize(self, payload: str) -> t.Any:
        """Return the object a payload made by :meth:`serialize` represents.

        May raise on a foreign payload, or one made by a different Python version.
        """

    def chomp(self, payload: str) -> str:
        """Strip this strategy's header from ``payload``.

        Raises :class:`~volley.errors.DeserializationError` if the payload carries another
        strategy's header.
        """
        if not payload.startswith(self.identifier):
            raise DeserializationError(f"Buffer does not start with identifier:{self.identifier}")
        return payload[IDENTIFIER_LENGTH:]


class ComboSerializationStrategy(SerializationStrategy, ABC):
    """Serializes with several strategies and keeps every result that succeeded.

    The payload is the combo's identifier followed by the framed (see
    :func:`~volley.serialize.utils.pack_buffers`) sub-payloads; deserializing tries them in
    order and returns the first that works, so the receiver may lack some of the strategies'
    capabilities (a different Python version, a missing source file) and still succeed.
    """

    #: Sub-strategies, tried in this order.
    strategies: t.ClassVar[list[type[SerializationStrategy]]]

    def serialize(self, data: t.Any) -> str:
        ":meta private:"
        payloads: list[str] = []
        errors: list[str] = []
        for strategy_cls in self.strategies:
            strategy = self.get_cached_by_class(strategy_cls)
            try:
                payloads.append(strategy.serialize(data))
            except Exception as e:
                errors.append(f"{strategy_cls.__name__}: {e}")
                logger.debug("Failed to serialize with %s", errors[-1])

        if not payloads:
            raise SerializationError(f"\n\nSerialization errors:\n* {_bullets(errors)}")
        return self.identifier + pack_buffers(payloads)

    def deserialize(self, payload: str) -> t.Any:
        ":meta private:"
        errors: list[str] = []
        for buffer in unpack_buffers(self.chomp(payload)):
            header, newline, _ = buffer.partition("\n")
            if not newline:
                ellipsis = "..." if len(buffer) > 50 else ""
                errors.append(f"Malformed data (no newline separator): {buffer[:50]}{ellipsis}")
                logger.debug("%s", errors[-1])
                continue

            # Any registered strategy may appear inside, not only this combo's own list.
            strategy = self.get_cached_by_id(header + "\n")
            if strategy is None:
                errors.append(f"Invalid strategy identifier: {header}")
                logger.debug("%s", errors[-1])
                continue

            try:
                return strategy.deserialize(buffer)
            except Exception as e:
                errors.append(f"{type(strategy).__name__}: {e}")
                logger.debug("Failed to deserialize with %s", errors[-1])

        raise DeserializationError(f"\n\nDeserialization errors:\n* {_bullets(errors)}")


def _bullets(errors: list[str]) -> str:
    return "\n* ".join(errors) if errors else "unknown"
