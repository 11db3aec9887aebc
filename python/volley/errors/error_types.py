"""Exception classes shared by the SDK, the serializer and the endpoint.

Names, base classes and message texts follow the Globus Compute SDK (4.19), because user code
written for it catches and prints these.  Every class reconstructs itself faithfully through
pickle: results and errors cross process boundaries (worker → endpoint → service → client).
"""

from __future__ import annotations

import re
import textwrap
import time
import typing as t

# Where the serialization help points.  Upstream links to its own read-the-docs page; ours is
# the matching section of the Volley executor guide.
SERDE_STRATEGY_DOCS = (
    'the Volley executor user guide, section "Specifying a Serialization Strategy"'
    " (docs/executor-user-guide.md#specifying-a-serialization-strategy)"
)

SERDE_TASK_EXECUTION_FAILED_HELP_MESSAGE = f"""

This appears to be an error with serialization. If it is, using a different
serialization strategy from volley.serialize might resolve the issue. For
example, to use volley.serialize.AllCodeStrategies:

  from volley import Executor
  from volley.serialize import ComputeSerializer, AllCodeStrategies

  with Executor('<your-endpoint-id>') as gcx:
    gcx.serializer = ComputeSerializer(strategy_code=AllCodeStrategies())

For more information, see:
    {SERDE_STRATEGY_DOCS}
"""

WORKER_LOST_MESSAGE = """*****
 One common cause of WorkerLost exceptions is Python version mismatch
 between the submitting Volley SDK and the Endpoint, as
 serialization is typically not compatible across differing major
 Python versions.
*****
"""


class ComputeError(Exception):
    """Base class of the SDK's own errors; ``str()`` is the subclass's ``repr()`` text."""

    def __str__(self) -> str:
        return self.__repr__()


class VersionMismatch(ComputeError):
    """Client and endpoint/service versions are incompatible, or a version is unreadable."""

    def __init__(self, version_message: str) -> None:
        # Passing the constructor argument to Exception keeps ``args`` equal to what pickle
        # must hand back to ``__init__``.
        super().__init__(version_message)
        self.version_message = version_message

    def __repr__(self) -> str:
        return f"Globus Compute Versioning Issue: {self.version_message}"


class SerdeError(ComputeError):
    """Serialization or deserialization failed; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __repr__(self) -> str:
        return f"{self.reason}"


class SerializationError(SerdeError):
    """Turning an object into a payload failed."""

    def __repr__(self) -> str:
        return f"Serialization failed: {self.reason}"


class DeserializationError(SerdeError):
    """Turning a payload back into an object failed."""

    def __repr__(self) -> str:
        return f"Deserialization failed: {self.reason}"


class TaskPending(ComputeError):
    """The task has no result yet; ``reason`` is its status string."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __repr__(self) -> str:
        return f"Task is pending due to {self.reason}"


class MaxResultSizeExceeded(Exception):
    """The serialized result is larger than the endpoint accepts.

    A plain ``Exception`` (not a ComputeError), as upstream: its ``repr`` is what the endpoint
    ships back as the remote error text, its ``str`` is the human message.
    """

    def __init__(self, result_size: int, result_size_limit: int) -> None:
        super().__init__(result_size, result_size_limit)
        self.result_size = result_size
        self.result_size_limit = result_size_limit

    def __str__(self) -> str:
        return (
            f"Task result of {self.result_size}B exceeded current limit of "
            f"{self.result_size_limit}B"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.result_size!r}, {self.result_size_limit!r})"


class TaskExecutionFailed(Exception):
    """A task failed remotely; carries the remote traceback text, not the original exception.

    The remote exception type is deliberately not rebuilt: the client may not be able to
    import it, and the text is what the endpoint sends.
    """

    SERDE_REGEX: t.ClassVar[re.Pattern[str]] = re.compile("dill|pickle|serializ", re.IGNORECASE)
    # Parsl reports a dead worker as ``parsl.<...>.WorkerLost: ...``; the usual cause is a
    # Python version mismatch, which earns an extra hint.
    WORKER_LOST_REGEX: t.ClassVar[re.Pattern[str]] = re.compile(r"\s*parsl\.\S+\.WorkerLost:")

    def __init__(
        self,
        remote_data: str,
        completion_t: str | None = None,
        task_details: dict[str, t.Any] | None = None,
    ) -> None:
        super().__init__(remote_data)
        self.remote_data = remote_data
        self.task_details = task_details
        # Results that arrive without a completion time are stamped on receipt.
        self.completion_t = completion_t or str(time.time())

    def __reduce__(self) -> tuple[t.Any, ...]:
        # ``args`` holds only remote_data; rebuild from all three so nothing is re-stamped.
        return (
            type(self),
            (self.remote_data, self.completion_t, self.task_details),
            self.__dict__,
        )

    def __str__(self) -> str:
        # textwrap.indent leaves whitespace-only lines alone, as upstream's text does.
        remote_data = textwrap.indent(self.remote_data, " ")
        message = "\n" + remote_data
        worker_lost = self.WORKER_LOST_REGEX.search(remote_data)
        if worker_lost or self.SERDE_REGEX.search(remote_data):
            message += SERDE_TASK_EXECUTION_FAILED_HELP_MESSAGE
        if worker_lost:
            message += WORKER_LOST_MESSAGE
        return message
