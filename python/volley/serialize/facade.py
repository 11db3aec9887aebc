"""``ComputeSerializer``: one entry point over all strategies, plus strategy validation and
deserializer allowlists.

Strategy import paths travel on the wire (an Executor's ``result_serializers``) and appear in
endpoint configuration, so both spellings are understood: ``volley.serialize[.concretes].X`` and
the Globus Compute SDK's ``globus_compute_sdk.serialize[.concretes].X``.  The latter are mapped
onto our classes by name; the upstream package is never imported.  The normalised path we
report for our strategies is the upstream one, which every peer understands.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
import textwrap
import typing as t
from dataclasses import dataclass
from enum import Enum

from volley.errors import DeserializationError, SerdeError, SerializationError
from volley.serialize import concretes
from volley.serialize.base import IDENTIFIER_LENGTH, SerializationStrategy
from volley.serialize.concretes import (
    DEFAULT_STRATEGY_CODE,
    DEFAULT_STRATEGY_DATA,
    SELECTABLE_STRATEGIES,
)
from volley.serialize.utils import pack_buffers, unpack_buffers

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup

__all__ = (
    "AllowlistWildcard",
    "ComputeSerializer",
    "DeserializerAllowlist",
    "Strategylike",
    "ValidatedStrategylike",
    "parse_allowlist",
    "validate_strategylike",
)

logger = logging.getLogger(__name__)

#: A strategy instance, a strategy class, or an import path (``"pkg.module.ClassName"``) to
#: either.  Instances and classes are equivalent: the shared registered instance is used.
Strategylike = SerializationStrategy | type[SerializationStrategy] | str


class AllowlistWildcard(str, Enum):
    """Allowlist entries that stand for every selectable strategy of one kind."""

    #: Every built-in *code* strategy.
    CODE = "volley.*Code"
    #: Every built-in *data* strategy.
    DATA = "volley.*Data"


DeserializerAllowlist = t.Iterable[Strategylike | AllowlistWildcard]

# Spellings of the wildcards, including the Globus Compute SDK's, so endpoint configuration
# written for upstream keeps working.
_WILDCARDS: dict[str, AllowlistWildcard] = {
    AllowlistWildcard.CODE.value: AllowlistWildcard.CODE,
    AllowlistWildcard.DATA.value: AllowlistWildcard.DATA,
    "globus_compute_sdk.*Code": AllowlistWildcard.CODE,
    "globus_compute_sdk.*Data": AllowlistWildcard.DATA,
}

_UPSTREAM_PACKAGE = "globus_compute_sdk"
_UPSTREAM_SERIALIZE = "globus_compute_sdk.serialize"
_OUR_SERIALIZE = "volley.serialize"
_SERIALIZE_SUBMODULES = frozenset({"", ".base", ".concretes", ".facade", ".utils"})
# The path peers use for our built-in strategies: upstream endpoints import it as is.
_WIRE_CONCRETES = f"{_UPSTREAM_SERIALIZE}.concretes"


@dataclass(frozen=True)
class ValidatedStrategylike:
    type_: type[SerializationStrategy]
    instance: SerializationStrategy
    import_path: str


def _our_module_for(module_name: str) -> str | None:
    """Our module standing in for an upstream serialize module; ``None`` if there is none."""
    if not module_name.startswith(_UPSTREAM_SERIALIZE):
        return None
    suffix = module_name[len(_UPSTREAM_SERIALIZE) :]
    return _OUR_SERIALIZE + suffix if suffix in _SERIALIZE_SUBMODULES else None


def _import_strategylike(path: str) -> t.Any:
    module_name, _, attr = path.rpartition(".")
    if module_name == _UPSTREAM_PACKAGE or module_name.startswith(_UPSTREAM_PACKAGE + "."):
        ours = _our_module_for(module_name)
        if ours is None:
            raise ImportError(f"no Volley counterpart of module {module_name!r}")
        module_name = ours
    return getattr(importlib.import_module(module_name), attr)


def _upstream_counterpart(class_: type) -> type | None:
    """Our class of the same name, for a strategy class of the Globus Compute SDK."""
    if _our_module_for(getattr(class_, "__module__", "") or "") is None:
        return None
    ours = getattr(concretes, class_.__name__, None)
    if inspect.isclass(ours) and issubclass(ours, SerializationStrategy):
        return ours
    return None


def _wire_path(class_: type[SerializationStrategy]) -> str:
    if class_.__module__ == concretes.__name__:
        return f"{_WIRE_CONCRETES}.{class_.__name__}"
    return f"{class_.__module__}.{class_.__name__}"


def _bad_strategylike(value: t.Any) -> SerdeError:
    return SerdeError(
        f"Invalid strategy-like '{value}'. Expected either a SerializationStrategy"
        " instance, a subclass of SerializationStrategy, or an import path to one."
    )


def validate_strategylike(
    value: Strategylike, *, for_code: bool | None = None
) -> ValidatedStrategylike:
    """Check that ``value`` names a selectable strategy (of the given kind, if ``for_code``
    is not ``None``) and return its class, shared instance and normalised import path.

    Raises :class:`~volley.errors.SerdeError` otherwise.
    """
    resolved: t.Any = value
    if isinstance(value, str):
        try:
            resolved = _import_strategylike(value)
        except Exception as e:
            raise _bad_strategylike(value) from e

    class_ = resolved if inspect.isclass(resolved) else type(resolved)
    if not issubclass(class_, SerializationStrategy):
        counterpart = _upstream_counterpart(class_)
        if counterpart is None:
            raise _bad_strategylike(value)
        class_ = counterpart

    strategy_for_code = getattr(class_, "for_code", None)
    if for_code is not None and strategy_for_code is not None and strategy_for_code != for_code:
        wanted, got = ("code", "data") if for_code else ("data", "code")
        raise SerdeError(
            f"{class_.__name__} is a {got} serialization strategy, expected a {wanted} strategy."
        )

    identifier = getattr(class_, "identifier", None)
    instance = SerializationStrategy.get_cached_by_id(identifier) if identifier else None
    if instance is None or class_ not in SELECTABLE_STRATEGIES:
        raise SerdeError(f"{class_.__name__} is not a known serialization strategy.")

    return ValidatedStrategylike(class_, instance, _wire_path(class_))


def _as_wildcard(value: t.Any) -> AllowlistWildcard | None:
    return _WILDCARDS.get(value) if isinstance(value, str) else None


def parse_allowlist(
    unvalidated: DeserializerAllowlist | None,
) -> set[type[SerializationStrategy]]:
    """The strategy classes an allowlist permits; an empty set (everything allowed) if the
    allowlist is empty or ``None``.

    Raises :class:`~volley.errors.SerdeError` on an invalid entry, a wildcard mixed with
    explicit strategies of its kind, or a list lacking either a code or a data entry.
    """
    if not unvalidated:
        return set()
    items = list(unvalidated)

    validated: set[type[SerializationStrategy]] = set()
    wildcards: dict[AllowlistWildcard, None] = {}  # ordered, for a deterministic error
    for value in items:
        wildcard = _as_wildcard(value)
        if wildcard is None:
            validated.add(validate_strategylike(value).type_)
        else:
            wildcards[wildcard] = None

    for wildcard in wildcards:
        for_code = wildcard is AllowlistWildcard.CODE
        if any(s.for_code == for_code for s in validated):
            # Spelled as Python >= 3.11 formats the enum member, whatever the version.
            raise SerdeError(
                f"Cannot mix '{type(wildcard).__name__}.{wildcard.name}' with specific"
                f" deserializers (got {items})"
            )
        validated.update(s for s in SELECTABLE_STRATEGIES if s.for_code == for_code)

    if len({s.for_code for s in validated}) != 2:
        raise SerdeError(
            "Deserialization allowlists must contain at least one code and one data"
            f" deserializer/wildcard (got: {items})"
        )
    return validated


class ComputeSerializer:
    """Serializes callables with a code strategy and everything else with a data strategy;
    deserializes any registered strategy's payload, optionally restricted by an allowlist.

    :param strategy_code: code strategy-like; :data:`DEFAULT_STRATEGY_CODE` if omitted.
    :param strategy_data: data strategy-like; :data:`DEFAULT_STRATEGY_DATA` if omitted.
    :param allowed_deserializer_types: strategies (or import paths, or
        :class:`AllowlistWildcard` values) allowed to deserialize; it must name at least one
        code and one data strategy.  Empty or ``None`` allows all.
    :raises SerdeError: on an unknown strategy or a malformed allowlist.
    """

    def __init__(
        self,
        strategy_code: Strategylike | None = None,
        strategy_data: Strategylike | None = None,
        *,
        allowed_deserializer_types: DeserializerAllowlist | None = None,
    ) -> None:
        self.code_serializer: SerializationStrategy = (
            DEFAULT_STRATEGY_CODE
            if strategy_code is None
            else validate_strategylike(strategy_code, for_code=True).instance
        )
        self.data_serializer: SerializationStrategy = (
            DEFAULT_STRATEGY_DATA
            if strategy_data is None
            else validate_strategylike(strategy_data, for_code=False).instance
        )
        self.allowed_deserializer_types: set[type[SerializationStrategy]] = parse_allowlist(
            allowed_deserializer_types
        )

    @staticmethod
    def serialize_from_list(data: t.Any, strategies: t.Iterable[Strategylike] | None) -> str:
        """Serialize with the first strategy-like that validates and succeeds.

        Falls back to the default strategies when ``strategies`` is empty.  If every one
        fails, raises :class:`~volley.errors.SerializationError` caused by an
        ``ExceptionGroup`` of the individual failures.
        """
        for_code = callable(data)
        failures: list[Exception] = []
        for strategy in strategies or (DEFAULT_STRATEGY_DATA, DEFAULT_STRATEGY_CODE):
            try:
                return validate_strategylike(strategy, for_code=for_code).instance.serialize(data)
            except Exception as e:
                failures.append(e)

        group = ExceptionGroup("Strategy failures:", failures)
        logger.error(
            "Strategy list %s failed to serialize a %s",
            strategies,
            type(data).__name__,
            exc_info=group,
        )
        raise SerializationError("All strategies failed.") from group

    def serialize(self, data: t.Any) -> str:
        """The text form of ``data``: callables use the code strategy, anything else the data
        strategy.  Raises :class:`~volley.errors.SerializationError` if the strategy fails."""
        if callable(data):
            kind, strategy = "Code", self.code_serializer
        else:
            kind, strategy = "Data", self.data_serializer
        try:
            return strategy.serialize(data)
        except Exception as e:
            raise SerializationError(
                f"{kind} serialization strategy {type(strategy).__name__} failed"
            ) from e

    def deserialize(self, payload: str) -> t.Any:
        """The object a serialized string represents; its header picks the strategy.

        Raises :class:`~volley.errors.DeserializationError` on an unknown header or a
        strategy outside the allowlist.
        """
        header = payload[:IDENTIFIER_LENGTH]
        strategy = SerializationStrategy.get_cached_by_id(header)
        if strategy is None:
            raise DeserializationError(f"Invalid header: {header} in data payload")
        if self.allowed_deserializer_types:
            self.assert_deserializer_allowed(strategy)
        return strategy.deserialize(payload)

    @staticmethod
    def pack_buffers(buffers: list[str]) -> str:
        """See :func:`volley.serialize.utils.pack_buffers`."""
        return pack_buffers(buffers)

    @staticmethod
    def unpack_buffers(packed_buffer: str) -> list[str]:
        """See :func:`volley.serialize.utils.unpack_buffers`."""
        return unpack_buffers(packed_buffer)

    def unpack_and_deserialize(self, packed_buffer: str) -> list[t.Any]:
        """``[function, args, kwargs]`` from a task body of exactly three framed payloads.

        Raises ``AssertionError`` if there are not three.
        """
        unpacked = [self.deserialize(buffer) for buffer in unpack_buffers(packed_buffer)]
        if len(unpacked) != 3:
            # Explicit, not ``assert``: the check must survive ``python -O``.
            raise AssertionError(f"Unpack expects 3 buffers, got {len(unpacked)}")
        return unpacked

    def check_strategies(
        self, function: t.Callable[..., t.Any], *args: t.Any, **kwargs: t.Any
    ) -> list[t.Any]:
        """Round-trip a submission through this serializer, as an endpoint would see it.

        Takes the arguments of :meth:`Executor.submit` and returns ``[function, args,
        kwargs]`` after serialization and deserialization, e.g.::

            fn, args, kwargs = ComputeSerializer().check_strategies(add, 3, y=4)
            assert fn(*args, **kwargs) == 7
        """
        try:
            packed = pack_buffers(
                [self.serialize(function), self.serialize(args), self.serialize(kwargs)]
            )
        except Exception as e:
            raise SerializationError("check_strategies failed to serialize") from e
        try:
            return self.unpack_and_deserialize(packed)
        except Exception as e:
            raise DeserializationError("check_strategies failed to deserialize") from e

    def assert_deserializer_allowed(self, strategy: SerializationStrategy) -> None:
        """Raise :class:`~volley.errors.DeserializationError` if an allowlist is configured
        and ``strategy`` is not on it."""
        allowed = self.allowed_deserializer_types
        if not allowed or type(strategy) in allowed:
            return

        kind = "Code" if strategy.for_code else "Data"
        payload_kind = "function" if strategy.for_code else "arguments"
        names = ", ".join(sorted(cls.__name__ for cls in allowed))
        # No documentation link here: the SDK appends its own serialization hint to remote
        # errors that mention serialization.
        message = (
            f"\n{kind} serializer {type(strategy).__name__} disabled by current configuration."
            f"\nThe current configuration requires the *{payload_kind}* to be serialized with"
            f" one of the allowed {kind} classes:\n\n    Allowed serializers: {names}"
        )
        raise DeserializationError(textwrap.indent(message, " "))
