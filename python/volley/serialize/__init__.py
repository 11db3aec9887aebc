"""Serialization of functions and data, wire-compatible with the Globus Compute SDK.

A serialized value is text: a three-character header naming the strategy (``"00\\n"`` for the
default data strategy, ``"01\\n"`` for the default code strategy, ...) followed by that
strategy's encoding.  :class:`ComputeSerializer` picks the strategy for a value and reads any
payload by its header.
"""

from volley.serialize.base import ComboSerializationStrategy, SerializationStrategy
from volley.serialize.concretes import (
    DEFAULT_STRATEGY_CODE,
    DEFAULT_STRATEGY_DATA,
    AllCodeStrategies,
    AllDataStrategies,
    CombinedCode,
    DillCode,
    DillCodeSource,
    DillCodeTextInspect,
    DillDataBase64,
    JSONData,
    PureSourceDill,
    PureSourceTextInspect,
)
from volley.serialize.facade import AllowlistWildcard, ComputeSerializer

# Same names, in the same order, as globus_compute_sdk.serialize.__all__.
__all__ = [  # noqa: RUF022
    "ComputeSerializer",
    "AllowlistWildcard",
    "ComboSerializationStrategy",
    "SerializationStrategy",
    "DEFAULT_STRATEGY_CODE",
    "DEFAULT_STRATEGY_DATA",
    # selectable strategies
    "AllCodeStrategies",
    "AllDataStrategies",
    "CombinedCode",
    "DillCode",
    "DillCodeSource",
    "DillCodeTextInspect",
    "PureSourceDill",
    "PureSourceTextInspect",
    "DillDataBase64",
    "JSONData",
]
