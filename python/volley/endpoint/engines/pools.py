"""Engines on the standard library's pools: threads (no isolation) and processes (spawned)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import threading
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from typing import Any

from volley.endpoint.engines.base import Engine, EngineConfigError, EngineStopped
from volley.endpoint.execute import execute_task


class WorkerLost(RuntimeError):
    """The worker process running a task died (killed, out of memory, ``os._exit``, crash)."""


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

    @property
    def capacity(self) -> int:
        return self.max_workers

    def start(self) -> None:
        super().start()
        self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="volley-task")

    def _run(self, task_id: str, body: bytes, result_serializers: list[str] | None) -> bytes:
        with self._lock:
            self._busy += 1
        try:
            return execute_task(task_id, body, change_dir=False, **self.task_kwargs(result_serializers))
        finally:
            with self._lock:
                self._busy -= 1

    def _submit(self, task_id: str, body: bytes, spec: dict[str, Any],
                result_serializers: list[str] | None) -> Future:
        assert self._pool is not None, "engine not started"
        try:
            return self._pool.submit(self._run, task_id, body, result_serializers)
        except RuntimeError:  # the pool is shut down
            raise EngineStopped(task_id) from None

    def workers(self) -> dict[str, int]:
        return {"total_workers": self.max_workers, "idle_workers": self.max_workers - self._busy}

    def shutdown(self) -> None:
        super().shutdown()
        if self._pool is not None:
            # running threads cannot be stopped; their results are dropped (EngineStopped) and
            # the tasks run again from the queue
            self._pool.shutdown(wait=False, cancel_futures=True)


def _worker_init() -> None:
    # Ctrl-C at a terminal reaches the whole foreground process group: the agent handles it and
    # stops the pool itself; a worker dying of KeyboardInterrupt would look like a lost worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class ProcessPoolEngine(Engine):
    """Tasks run in spawned worker processes (never forked: the agent has broker threads).

    Tasks are handed to the pool only when a worker is free, so when a worker dies — which
    breaks the whole standard-library pool — only the tasks that were running are affected;
    they fail with WorkerLost (and are retried per ``max_retries_on_system_failure``), and a
    new pool takes the next tasks.
    """

    type_name = "ProcessPoolEngine"
    options = ("max_workers",)

    def __init__(self, *, max_workers: int | None = None, **common: Any) -> None:
        super().__init__(**common)
        self.max_workers = _max_workers(max_workers)
        self._plock = threading.RLock()
        self._waiting: deque[tuple[Future, str, bytes, list[str] | None]] = deque()
        self._running = 0
        self._pool: ProcessPoolExecutor | None = None

    @property
    def capacity(self) -> int:
        return self.max_workers

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self.max_workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
        )

    def start(self) -> None:
        super().start()
        self._pool = self._new_pool()

    def _submit(self, task_id: str, body: bytes, spec: dict[str, Any],
                result_serializers: list[str] | None) -> Future:
        fut: Future = Future()
        with self._plock:
            if self._stopping:
                raise EngineStopped(task_id)
            self._waiting.append((fut, task_id, body, result_serializers))
        self._pump()
        return fut

    def _pump(self) -> None:
        with self._plock:
            while self._running < self.max_workers and self._waiting and not self._stopping:
                fut, task_id, body, rs = self._waiting.popleft()
                pool = self._pool
                assert pool is not None, "engine not started"
                try:
                    inner = pool.submit(execute_task, task_id, body, **self.task_kwargs(rs))
                except (BrokenProcessPool, RuntimeError):
                    pool = self._replace_pool(pool)
                    inner = pool.submit(execute_task, task_id, body, **self.task_kwargs(rs))
                self._running += 1
                inner.add_done_callback(partial(self._relay, fut, pool, task_id))

    def _replace_pool(self, broken: ProcessPoolExecutor) -> ProcessPoolExecutor:
        with self._plock:
            if self._pool is broken:
                broken.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool()
            assert self._pool is not None
            return self._pool

    def _relay(self, fut: Future, pool: ProcessPoolExecutor, task_id: str, inner: Future) -> None:
        exc = inner.exception()
        with self._plock:
            self._running -= 1
        if exc is None:
            fut.set_result(inner.result())
        elif self._stopping:
            fut.set_exception(EngineStopped(task_id))
        elif isinstance(exc, BrokenProcessPool):
            self._replace_pool(pool)
            fut.set_exception(WorkerLost(
                f"Task failure due to loss of a worker process on host {socket.gethostname()}: "
                f"the process running this task died (killed, out of memory, os._exit or a crash); "
                f"{exc}"
            ))
        else:
            fut.set_exception(exc)
        self._pump()

    def workers(self) -> dict[str, int]:
        return {"total_workers": self.max_workers, "idle_workers": self.max_workers - self._running}

    def shutdown(self) -> None:
        super().shutdown()
        with self._plock:
            waiting = list(self._waiting)
            self._waiting.clear()
            pool = self._pool
        for fut, task_id, _, _ in waiting:
            fut.set_exception(EngineStopped(task_id))
        if pool is not None:
            # running tasks are stopped, not awaited: they run again from the queue next time
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.terminate()
            pool.shutdown(wait=True, cancel_futures=True)
