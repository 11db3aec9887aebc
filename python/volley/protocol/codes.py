"""Error codes of the wire contract, each written once.

:class:`ResultCode` values travel in a Result message's ``error_details.code`` (endpoint or
service → SDK); the SDK shows the code and the message, the data holds the text or traceback.
REST error codes (the ``code`` of a ``{"code", "message"}`` answer) are in :class:`ApiCode`.
"""

from __future__ import annotations

from typing import Final


class ResultCode:
    # the user's function raised (data: its traceback)
    REMOTE_EXECUTION_ERROR: Final = "RemoteExecutionError"
    # the task message or its payload could not be turned into a call
    COULD_NOT_EXECUTE: Final = "CouldNotExecuteUserTaskError"
    # the serialized result exceeds topology.MAX_PAYLOAD_SIZE
    MAX_RESULT_SIZE_EXCEEDED: Final = "MaxResultSizeExceeded"
    # the endpoint's engine cannot honour the task's resource specification
    INVALID_RESOURCE_SPECIFICATION: Final = "InvalidResourceSpecification"
    # the endpoint's allowed_functions does not list the task's function
    FUNCTION_NOT_ALLOWED: Final = "FUNCTION_NOT_ALLOWED"
    # the engine failed the task (a lost worker, past its retries) or could not start it
    UNKNOWN_TASK_FAILURE: Final = "UNKNOWN_TASK_FAILURE"
    # the service failed a waiting task because its function or endpoint was deleted
    FUNCTION_DELETED: Final = "FunctionDeleted"
    # cancelled on request before it ran, or stopped while running by a force-cancel
    TASK_CANCELLED: Final = "TaskCancelled"
    ENDPOINT_DELETED: Final = "EndpointDeleted"


class ApiCode:
    """The ``code`` of a REST error answer ``{"code", "message"}`` (docs/protocol.md)."""

    UNAUTHORIZED: Final = "UNAUTHORIZED"
    TOKEN_EXPIRED: Final = "TOKEN_EXPIRED"
    NOT_FOUND: Final = "NOT_FOUND"
    METHOD_NOT_ALLOWED: Final = "METHOD_NOT_ALLOWED"
    CONFLICT: Final = "CONFLICT"
    REQUEST_ID_REUSED: Final = "REQUEST_ID_REUSED"
    ENDPOINT_LOCKED: Final = "ENDPOINT_LOCKED"
    INVALID_REQUEST: Final = "INVALID_REQUEST"
    PAYLOAD_TOO_LARGE: Final = "PAYLOAD_TOO_LARGE"
    TOO_MANY_TASKS: Final = "TOO_MANY_TASKS"
    QUOTA_EXCEEDED: Final = "QUOTA_EXCEEDED"
    OUTBOX_FULL: Final = "OUTBOX_FULL"
    FUNCTION_NOT_ALLOWED: Final = "FUNCTION_NOT_ALLOWED"
    CANCEL_NOT_SUPPORTED: Final = "CANCEL_NOT_SUPPORTED"
    BROKER_UNAVAILABLE: Final = "BROKER_UNAVAILABLE"
    DATABASE_UNAVAILABLE: Final = "DATABASE_UNAVAILABLE"
    HTTP_ERROR: Final = "HTTP_ERROR"
    INTERNAL_ERROR: Final = "INTERNAL_ERROR"
