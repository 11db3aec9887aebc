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
    ENDPOINT_DELETED: Final = "EndpointDeleted"

