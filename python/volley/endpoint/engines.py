"""Engines run tasks: a thread pool or a process pool here; Parsl engines plug in the same way."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from volley.endpoint.execute import execute_task
from volley.protocol.messages import pack_result


class EngineError(RuntimeError):
    pass


class Engine:
    """Base: ``submit`` returns a future of the packed ``Result`` bytes."""

    type_name = "Engine"

    def __init__(self, *, endpoint_id: str, run_dir: str, run_in_sandbox: bool = False, **kwargs: Any) -> None:
        self.endpoint_id = endpoint_id
        self.run_dir = run_dir
        self.run_in_sandbox = run_in_sandbox
        self.max_workers = int(kwargs.pop("max_workers", None) or os.cpu_count() or 1)
        if kwargs:
            raise EngineError(f"{self.type_name} does not take option(s) {sorted(kwargs)}")
        self.outstanding = 0

    def start(self) -> None:
        os.makedirs(self.run_dir, exist_ok=True)

    def submit(self, task_id: str, body: bytes, resource_specification: dict[str, Any],
               result_serializers: list[str] | None) -> Future:
        if resource_specification:
            fut: Future = Future()
            fut.set_result(pack_result(
                task_id,
                f"{self.type_name} does not take a resource specification (got {resource_specification}); "
                "use an MPIEngine endpoint for MPI tasks",
                error_code="CouldNotExecuteUserTaskError",
                error_message="remote error: resource specification not supported by this engine",
            ))
            return fut
        self.outstanding += 1
        fut = self._submit(task_id, body, result_serializers)
        fut.add_done_callback(self._done)
        return fut

    def _done(self, _fut: Future) -> None:
        self.outstanding -= 1

    def _submit(self, task_id: str, body: bytes, result_serializers: list[str] | None) -> Future:
        raise NotImplementedError

    def status(self) -> dict[str, Any]:
        return {
            "engine_type": self.type_name,
            "total_workers": self.max_workers,
            "outstanding_tasks": self.outstanding,
            "total_cores": os.cpu_count(),
            "scaling_enabled": False,
        }

    def shutdown(self) -> None:
        pass


class ThreadPoolEngine(Engine):
    type_name = "ThreadPoolEngine"

    def start(self) -> None:
        super().start()
        self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="volley-task")

    def _submit(self, task_id: str, body: bytes, result_serializers: list[str] | None) -> Future:
        # threads share one working directory, so this engine never chdirs
        return self._pool.submit(
            execute_task, task_id, body, endpoint_id=self.endpoint_id, run_dir=self.run_dir,
            run_in_sandbox=self.run_in_sandbox, result_serializers=result_serializers, change_dir=False,
        )

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)


class ProcessPoolEngine(Engine):
    type_name = "ProcessPoolEngine"

    def start(self) -> None:
        super().start()
        self._new_pool()

    def _new_pool(self) -> None:
        # spawn, not fork: the agent has broker threads and a tokio runtime that must not be forked
        self._pool = ProcessPoolExecutor(self.max_workers, mp_context=multiprocessing.get_context("spawn"))

    def _submit(self, task_id: str, body: bytes, result_serializers: list[str] | None) -> Future:
        out: Future = Future()
        try:
            inner = self._pool.submit(
                execute_task, task_id, body, endpoint_id=self.endpoint_id, run_dir=self.run_dir,
                run_in_sandbox=self.run_in_sandbox, result_serializers=result_serializers,
            )
        except BrokenProcessPool:
            self._new_pool()
            inner = self._pool.submit(
                execute_task, task_id, body, endpoint_id=self.endpoint_id, run_dir=self.run_dir,
                run_in_sandbox=self.run_in_sandbox, result_serializers=result_serializers,
            )

        def relay(f: Future) -> None:
            exc = f.exception()
            if exc is None:
                out.set_result(f.result())
                return
            if isinstance(exc, BrokenProcessPool):
                self._new_pool()
            out.set_result(pack_result(
                task_id,
                f"the worker process running this task died: {exc!r}",
                error_code="UNKNOWN_TASK_FAILURE",
                error_message=f"remote error: worker lost ({type(exc).__name__})",
            ))

        inner.add_done_callback(relay)
        return out

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)


ENGINES: dict[str, type[Engine]] = {e.type_name: e for e in (ThreadPoolEngine, ProcessPoolEngine)}


def build_engine(engine_type: str, **kwargs: Any) -> Engine:
    cls = ENGINES.get(engine_type)
    if cls is None:
        raise EngineError(f"engine type {engine_type!r} is not available yet on this endpoint")
    return cls(**kwargs)
