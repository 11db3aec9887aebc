"""The concrete serialization strategies.

Headers, encodings and error texts are those of the Globus Compute SDK, so payloads cross
between the two in both directions:

========================  ======  ====  =================================================
class                     header  code  body
========================  ======  ====  =================================================
DillDataBase64 (default)  ``00``  no    MIME base64 of ``dill.dumps(obj)``
DillCode (default)        ``01``  yes   MIME base64 of ``dill.dumps(fn)``
PickleCode (read only)    ``02``  yes   MIME base64 of a pickle
DillCodeTextInspect       ``03``  yes   base64 of ``dill.dumps((name, inspect source))``
DillCodeSource            ``04``  yes   base64 of ``dill.dumps((name, dill source))``
CombinedCode              ``10``  yes   ``":"``-joined header/body pairs (legacy)
JSONData                  ``11``  no    ``json.dumps(obj)``
AllCodeStrategies         ``12``  yes   framed payloads of several code strategies
AllDataStrategies         ``13``  no    framed payloads of several data strategies
PureSourceTextInspect     ``st``  yes   ``name:source`` from :func:`inspect.getsource`
PureSourceDill            ``sd``  yes   ``name:source`` from ``dill.source.getsource``
========================  ======  ====  =================================================
"""

from __future__ import annotations

import base64
import binascii
import inspect
import json
import pickle
import typing as t
from collections import OrderedDict

import dill
import dill.source

from volley.errors import DeserializationError, SerializationError
from volley.serialize.base import ComboSerializationStrategy, SerializationStrategy

__all__ = (
    "DEFAULT_STRATEGY_CODE",
    "DEFAULT_STRATEGY_DATA",
    "SELECTABLE_CODE_STRATEGIES",
    "SELECTABLE_DATA_STRATEGIES",
    "SELECTABLE_STRATEGIES",
    "AllCodeStrategies",
    "AllDataStrategies",
    "CombinedCode",
    "DillCode",
    "DillCodeSource",
    "DillCodeTextInspect",
    "DillDataBase64",
    "JSONData",
    "PickleCode",
    "PureSourceDill",
    "PureSourceTextInspect",
)


# -- dill with a fast path for plain data ----------------------------------------------------
#
# dill pickles with the pure-Python pickler, which costs ~10 us for a tiny ``(args, kwargs)``
# pair; the C pickler needs ~0.2 us.  For trees of plain built-in values dill adds nothing
# (it registers no reducer for them; its dict hook only matters for module namespaces, which
# always hold a "__name__" key) and both picklers emit the same bytes, so those go to the C
# pickler.  Everything else, and anything deeper than _PLAIN_MAX_DEPTH, goes through dill.

_PLAIN_SCALARS: frozenset[type] = frozenset({type(None), bool, int, float, str, bytes})
_PLAIN_MAX_DEPTH = 32


def _is_plain(obj: t.Any, depth: int = 0) -> bool:
    kind = type(obj)
    if kind in _PLAIN_SCALARS:
        return True
    if depth >= _PLAIN_MAX_DEPTH:
        return False
    depth += 1
    if kind is tuple or kind is list or kind is set or kind is frozenset:
        for item in obj:
            if type(item) not in _PLAIN_SCALARS and not _is_plain(item, depth):
                return False
        return True
    if kind is dict:
        if "__name__" in obj:
            return False
        for key, value in obj.items():
            if type(key) not in _PLAIN_SCALARS and not _is_plain(key, depth):
                return False
            if type(value) not in _PLAIN_SCALARS and not _is_plain(value, depth):
                return False
        return True
    return False


def _dill_dumps(obj: t.Any) -> bytes:
    protocol = dill.settings["protocol"]
    # Below protocol 4 the two picklers disagree on sets and bytes; dill's default is >= 4.
    if protocol >= 4 and _is_plain(obj):
        return pickle.dumps(obj, protocol=protocol)
    return dill.dumps(obj)


def _b64encode(raw: bytes) -> str:
    # MIME base64: a newline every 76 characters and a trailing newline, like
    # ``codecs.encode(raw, "base64")``.
    return base64.encodebytes(raw).decode("ascii")


def _b64decode(text: str) -> bytes:
    return binascii.a2b_base64(text.encode())


def _exec_source(name: str, source: str) -> t.Any:
    namespace: dict[str, t.Any] = {}
    exec(source, namespace)
    return namespace[name]


# -- strategies, in the registration order of the reference ----------------------------------


class DillDataBase64(SerializationStrategy):
    """Data via ``dill.dumps``, as MIME base64 text.  The default data strategy."""

    identifier = "00\n"
    for_code = False

    def serialize(self, data: t.Any) -> str:
        ":meta private:"
        return self.identifier + _b64encode(_dill_dumps(data))

    def deserialize(self, payload: str) -> t.Any:
        ":meta private:"
        return dill.loads(_b64decode(self.chomp(payload)))


class JSONData(SerializationStrategy):
    """Data via :func:`json.dumps`: readable by any language, limited to JSON types."""

    identifier = "11\n"
    for_code = False

    def serialize(self, data: t.Any) -> str:
        ":meta private:"
        return self.identifier + json.dumps(data)

    def deserialize(self, payload: str) -> t.Any:
        ":meta private:"
        return json.loads(self.chomp(payload))


class DillCodeSource(SerializationStrategy):
    """The function's name and ``dill.source.getsource`` text, dill-pickled, base64.

    Deprecated (as upstream, since 4.0.0): use :class:`PureSourceDill`.
    """

    identifier = "04\n"
    for_code = True

    def serialize(self, data: t.Any) -> str:
        ":meta private:"
        name: str = data.__name__
        source = dill.source.getsource(data, lstrip=True)
        return self.identifier + _b64encode(dill.dumps((name, source)))

    def deserialize(self, payload: str) -> t.Any:
        ":meta private:"
        name, source = dill.loads(_b64decode(self.chomp(payload)))
        return _exec_source(name, source)


class DillCodeTextInspect(SerializationStrategy):
    """The function's name and :func:`inspect.getsource` text, dill-pickled, base64.

    Deprecated (as upstream, since 4.0.0): use :class:`PureSourceTextInspect`.
    """

    identifier = "03\n"
    for_code = True

    def serialize(self, data: t.Any) -> str:
        ":meta private:"
        name: str = data.__name__
        source = inspect.getsource(data)
        return self.identifier + _b64encode(dill.dumps((name, source)))

    def deserialize(self, payload: str) -> t.Any:
        ":meta private:"
        name, source = dill.loads(_b64decode(self.chomp(payload)))
        return _exec_source(name, source)


class PickleCode(SerializationStrategy):
    """Plain pickle, base64.  Kept only to read very old functions; cannot serialize.

    :meta private:
    """

    _DEPRECATED = True

    identifier = "02\n"
    for_code = True

    def serialize(self, data: t.Any) -> str:
        ":meta private:"
        raise NotImplementedError("Pickle serialization is no longer supported")

    def deserialize(self, payload: str) -> t.Any:
        ":meta private:"
        return pickle.loads(_b64decode(self.chomp(payload)))


class DillCode(SerializationStrategy):
    """The callable itself via ``dill.dumps``, base64.  The default code strategy.

    Handles decorated functions and notebook code, but the two ends must run the same
    Python version.
    """

    identifier = "01\n"
    for_code = True

    def serialize(self, data: t.Any) -> str:
        ":meta private:"
        return self.identifier + _b64encode(dill.dumps(data))

    def deserialize(self, payload: str) -> t.Any:
        ":meta private:"
        return dill.loads(_b64decode(self.chomp(payload)))


class _PlainSource(SerializationStrategy):
    """``name:source`` as plain text; the receiver execs the source and takes ``name``."""

    _separator: t.ClassVar[str] = ":"

    @staticmethod
    def _source(fn: t.Any) -> str:
        raise NotImplementedError

    @classmethod
    def frame(cls, name: str, source: str) -> str:
        """The payload for function ``name`` defined in ``source``."""
        return cls.identifier + name + cls._separator + source

    def serialize(self, data: t.Any) -> str:
        ":meta private:"
        return self.frame(data.__name__, self._source(data))

    def deserialize(self, payload: str) -> t.Any:
        ":meta private:"
        name, separator, source = self.chomp(payload).partition(self._separator)
        if not separator:
            raise DeserializationError(
                f"Missing '{self._separator}' between function name and source"
            )
        return _exec_source(name, source)


class PureSourceTextInspect(_PlainSource):
    """The function's :func:`inspect.getsource` text, sent as is.

    Works across Python versions and in notebooks; not for decorated functions.
    """

    identifier = "st\n"
    for_code = True

    @staticmethod
    def _source(fn: t.Any) -> str:
        return inspect.getsource(fn)


class PureSourceDill(_PlainSource):
    """The function's ``dill.source.getsource`` text, sent as is.

    Works across Python versions and for functions typed into the interpreter; not for
    decorated functions.
    """

    identifier = "sd\n"
    for_code = True

    @staticmethod
    def _source(fn: t.Any) -> str:
        return dill.source.getsource(fn, lstrip=True)


class CombinedCode(SerializationStrategy):
    """Legacy multi-strategy code payload.  Deprecated: use :class:`AllCodeStrategies`.

    The payload is the header followed by ``hdr1:body1:hdr2:body2...`` (each sub-header keeps
    its newline).  Because the pieces are split again on *every* colon, the plain-source
    parts cannot be read back; the reference behaves the same way and the format is kept
    for old payloads.
    """

    identifier = "10\n"
    for_code = True

    # Sub-strategies in the order they are tried, keyed by identifier.
    _chunk_strategies: t.ClassVar[OrderedDict[str, type[SerializationStrategy]]] = OrderedDict(
        (cls.identifier, cls)
        for cls in (
            DillCodeSource,
            DillCode,
            DillCodeTextInspect,
            PureSourceDill,
            PureSourceTextInspect,
        )
    )

    _separator: t.ClassVar[str] = ":"

    def get_multiple_payloads(self, payload: str) -> tuple[tuple[str, str], ...]:
        """``((header, body), ...)`` pairs of a CombinedCode payload."""
        parts = iter(self.chomp(payload).split(self._separator))
        return tuple(zip(parts, parts, strict=False))

    def serialize(self, data: t.Any) -> str:
        ":meta private:"
        chunks: list[str] = []
        for header, cls in self._chunk_strategies.items():
            try:
                serialized = cls().serialize(data)
            except Exception:
                continue
            chunks.append(serialized[: len(header)])
            chunks.append(serialized[len(header) :])

        if not chunks:
            raise SerializationError("No serialization methods were successful")
        return self.identifier + self._separator.join(chunks)

    def deserialize(self, payload: str, variation: int = 0) -> t.Any:
        """Return the first chunk that deserializes.

        ``variation`` (1-based) forces the N-th chunk instead, and raises if that one fails.
        """
        tries = 0
        for header, body in self.get_multiple_payloads(payload):
            tries += 1
            if variation and tries != variation:
                continue
            cls = self._chunk_strategies.get(header)
            if cls is None:
                raise DeserializationError(f"Invalid serialization id {header}")
            try:
                return cls().deserialize(header + body)
            except Exception as e:
                if variation:
                    raise DeserializationError(
                        f"Failed to deserialize using variation #{tries}"
                    ) from e
        raise DeserializationError(f"Deserialization failed after {tries} tries")


class AllCodeStrategies(ComboSerializationStrategy):
    """Every payload that :class:`PureSourceTextInspect`, :class:`PureSourceDill` and
    :class:`DillCode` can make; the receiver uses the first it can read.

    For the widest compatibility (e.g. mismatched Python versions) when payload size and
    time matter less.
    """

    identifier = "12\n"
    for_code = True
    strategies = [PureSourceTextInspect, PureSourceDill, DillCode]


class AllDataStrategies(ComboSerializationStrategy):
    """Every payload that :class:`JSONData` and :class:`DillDataBase64` can make; the
    receiver uses the first it can read."""

    identifier = "13\n"
    for_code = False
    strategies = [JSONData, DillDataBase64]


#: Strategies a user may choose, in registration order (PickleCode cannot serialize).
SELECTABLE_STRATEGIES: list[type[SerializationStrategy]] = [
    DillDataBase64,
    JSONData,
    DillCodeSource,
    DillCodeTextInspect,
    DillCode,
    PureSourceTextInspect,
    PureSourceDill,
    CombinedCode,
    AllCodeStrategies,
    AllDataStrategies,
]
SELECTABLE_CODE_STRATEGIES = [s for s in SELECTABLE_STRATEGIES if s.for_code]
SELECTABLE_DATA_STRATEGIES = [s for s in SELECTABLE_STRATEGIES if not s.for_code]

#: The code strategy :class:`~volley.serialize.ComputeSerializer` uses unless told otherwise.
DEFAULT_STRATEGY_CODE = SerializationStrategy.get_cached_by_class(DillCode)
#: The data strategy :class:`~volley.serialize.ComputeSerializer` uses unless told otherwise.
DEFAULT_STRATEGY_DATA = SerializationStrategy.get_cached_by_class(DillDataBase64)
