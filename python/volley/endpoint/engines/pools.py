"""Engines on the standard library's pools: threads (no isolation) and processes (spawned)."""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from volley.endpoint.engines.base import (
    CancelOutcome,
    Engine,
    EngineConfigError,
    EngineStopped,
    TaskCancelled,
)
from volley.endpoint.engines.workers import WorkerLost, WorkerPool
from volley.endpoint.execute import execute_task

__all__ = ("ProcessPoolEngine", "ThreadPoolEngine", "WorkerLost")


def _max_workers(value: Any) -> int:
    if value is None:
        return os.cpu_count() or 1
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise EngineConfigError(f"engine.max_workers: must be a positive integer, got {value!r}")
    return value


class ThreadPoolEngine(Engine):
    """Tasks run in threads of the agent.  They share its working directory and environment,
    so this engine never changes directory, and ``GC_TASK_*`` variables are only reliable when
    one task runs at a time; use ProcessPoolEngine for isolation."""

    type_name = "ThreadPoolEngine"
    options = ("max_workers",)

    def __init__(self, *, max_workers: int | None = None, **common: Any) -> None:
        super().__init__(**common)
        self.max_workers = _max_workers(max_workers)
        self._pool: ThreadPoolExecutor | None = None
        self._busy = 0
        self._futures: dict[str, Future] = {}  # task id -> its future, until it is done

    @property
    def capacity(self) -> int:
        return self.max_workers

    def start(self) -> None:
        super().start()
        self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="volley-task")

    def _run(self, task_id: str, body: bytes, result_serializers: list[str] | None) -> bytes:
        with self._lock:
            self._busy += 1
        self.on_start(task_id)
        try:
            return execute_task(task_id, body, change_dir=False, **self.task_kwargs(result_serializers))
        finally:
            with self._lock:
                self._busy -= 1

    def _submit(self, task_id: str, body: bytes, spec: dict[str, Any],
                result_serializers: list[str] | None) -> Future:
        assert self._pool is not None, "engine not started"
        try:
            fut = self._pool.submit(self._run, task_id, body, result_serializers)
        except RuntimeError:  # the pool is shut down
            raise EngineStopped(task_id) from None
        self._futures[task_id] = fut
        fut.add_done_callback(lambda _f: self._futures.pop(task_id, None))
        return fut

    def cancel(self, task_id: str, force: bool) -> str:
        """A task no thread has picked up is dropped; a thread cannot be stopped."""
        fut = self._futures.get(task_id)
        if fut is None:
            return CancelOutcome.UNKNOWN
        if fut.cancel():
            return CancelOutcome.DROPPED
        return CancelOutcome.REFUSED if force else CancelOutcome.RUNNING

    def workers(self) -> dict[str, int]:
        return {"total_workers": self.max_workers, "idle_workers": self.max_workers - self._busy}

    def shutdown(self) -> None:
        super().shutdown()
        if self._pool is not None:
            # running threads cannot be stopped; their results are dropped (EngineStopped) and
            # the tasks run again from the queue
            self._pool.shutdown(wait=False, cancel_futures=True)


class ProcessPoolEngine(Engine):
    """Tasks run in spawned worker processes (never forked: the agent has broker threads), fed
    in batches over a pipe each (:mod:`volley.endpoint.engines.workers`).

    When a worker dies only the task it was running is affected: it fails with WorkerLost (and
    is retried per ``max_retries_on_system_failure``); the tasks queued behind it run on, and a
    new worker takes its place.  A force-cancel of a running task kills its worker the same
    way, and the task resolves with TaskCancelled instead.
    """

    type_name = "ProcessPoolEngine"
    options = ("max_workers",)
    can_force_cancel = True

    def __init__(self, *, max_workers: int | None = None, **common: Any) -> None:
        super().__init__(**common)
        self.max_workers = _max_workers(max_workers)
        self._pool: WorkerPool | None = None

    @property
    def capacity(self) -> int:
        return self.max_workers

    def start(self) -> None:
        super().start()
        common = self.task_kwargs(None)
        del common["result_serializers"]
        self._pool = WorkerPool(self.max_workers, common, cancelled_error=TaskCancelled,
                                on_start=lambda task_id: self.on_start(task_id))
        self._pool.start()

    def _submit(self, task_id: str, body: bytes, spec: dict[str, Any],
                result_serializers: list[str] | None) -> Future:
        assert self._pool is not None, "engine not started"
        try:
            return self._pool.submit(task_id, body, result_serializers)
        except RuntimeError:  # the pool is shut down
            raise EngineStopped(task_id) from None

    def cancel(self, task_id: str, force: bool) -> str:
        if self._pool is None:
            return CancelOutcome.UNKNOWN
        return self._pool.cancel(task_id, force)

    def problem(self) -> str | None:
        return self._pool.problem if self._pool is not None else None

    def workers(self) -> dict[str, int]:
        busy = self._pool.busy() if self._pool is not None else 0
        return {"total_workers": self.max_workers, "idle_workers": self.max_workers - busy}

    def shutdown(self) -> None:
        super().shutdown()
        if self._pool is not None:
            # running tasks are stopped, not awaited: they run again from the queue next time
            self._pool.shutdown(EngineStopped)
