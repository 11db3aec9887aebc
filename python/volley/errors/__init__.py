"""Exceptions raised by the Volley SDK (names and texts match the Globus Compute SDK)."""

from volley.errors.error_types import (
    ComputeError,
    DeserializationError,
    MaxResultSizeExceeded,
    SerdeError,
    SerializationError,
    TaskExecutionFailed,
    TaskPending,
    VersionMismatch,
)

__all__ = (
    "ComputeError",
    "DeserializationError",
    "MaxResultSizeExceeded",
    "SerdeError",
    "SerializationError",
    "TaskExecutionFailed",
    "TaskPending",
    "VersionMismatch",
)
