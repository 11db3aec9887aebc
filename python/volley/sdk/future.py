"""``ComputeFuture``: a ``concurrent.futures.Future`` that knows its task id."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any


class ComputeFuture(Future):
    """``task_id`` is ``None`` until the service accepts the submission, then the task UUID string."""

    def __init__(self, task_id: str | None = None) -> None:
        super().__init__()
        self.task_id: str | None = task_id
        self._metadata: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]} task_id={self.task_id}>"
