"""What every engine shares: resource-spec checks, retries on system failure, error results.

``Engine.submit`` returns a future that resolves to the packed ``Result`` bytes of the task —
including error Results for the task's own failures and for failures of the engine (a lost
worker).  The one exception is :class:`EngineStopped`: the engine was shut down under the task,
which then has no result at all; the agent leaves its delivery unacked so the broker hands it
to the next run of the endpoint.
"""

from __future__ import annotations

import logging
import os
import threading
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from volley.protocol.codec import pack_result
from volley.protocol.codes import ResultCode
from volley.sdk.retry import attempts_text

log = logging.getLogger(__name__)


class EngineConfigError(ValueError):
    """A bad ``engine:`` block; the text starts with the key (``engine.provider.type: ...``)."""


class EngineStopped(RuntimeError):
    """The engine shut down while the task was waiting or running; it has no result."""


class CancelOutcome:
    """What :meth:`WorkerPool.cancel` (and ``Engine.cancel``) did with a task."""

    DROPPED = "dropped"  # it had not started; it resolves with TaskCancelled and never runs
    SKIPPING = "skipping"  # its worker is told to skip it: TaskCancelled, or its result if it had started
    KILLED = "killed"  # it was running; its worker was killed and it resolves with TaskCancelled
    RUNNING = "running"  # it runs (or may have started) and was left alone
    REFUSED = "refused"  # force-cancel of a running task, on an engine that cannot stop one
    UNKNOWN = "unknown"  # not held here (finished already, or not received yet)


class TaskCancelled(RuntimeError):
    """The task was cancelled on request; its text says when.  Never retried."""


class ResourceSpecError(ValueError):
    """A resource specification this engine cannot honour; sent back to the client."""


# A task running when the whole agent died runs again at least this many times, whatever
# max_retries_on_system_failure says.  Such a death is rarely the task's fault (a reboot, an
# operator, the agent's own memory), and an endpoint that dies must lose nothing; a task that was
# running at three deaths in a row is the likely cause, and is given up (Dask's
# ``allowed-failures`` stops a task that keeps killing workers the same way, at 3).
AGENT_DEATH_RETRIES = 2


def _ignore(_task_id: str) -> None:
    pass


def error_result(task_id: str, data: str, code: str, user_message: str, endpoint_id: str | None) -> bytes:
    return pack_result(task_id, data, error_code=code, error_message=user_message,
                       details={"endpoint_id": endpoint_id})


def cancelled_result(task_id: str, why: str, endpoint_id: str | None) -> bytes:
    """The Result of a task cancelled on request (``why``: "it was cancelled before ...")."""
    text = f"TaskCancelled: task {task_id} did not complete: {why} (on endpoint {endpoint_id})"
    return error_result(task_id, text, ResultCode.TASK_CANCELLED, text, endpoint_id)


COMMON_OPTIONS = ("run_in_sandbox", "working_dir", "max_retries_on_system_failure", "allowed_serializers")


class Engine:
    type_name = "Engine"
    # engine-specific option names accepted besides COMMON_OPTIONS
    options: tuple[str, ...] = ()
    # whether cancel(force=True) can stop a running task (reported in status(): the service
    # refuses a force-cancel for an endpoint that cannot)
    can_force_cancel = False

    def __init__(
        self,
        *,
        endpoint_id: str | None = None,
        endpoint_dir: str = ".",
        run_in_sandbox: bool = False,
        working_dir: str = "tasks_working_dir",
        max_retries_on_system_failure: int = 0,
        allowed_serializers: list[str] | None = None,
    ) -> None:
        if isinstance(max_retries_on_system_failure, bool) or not isinstance(max_retries_on_system_failure, int) \
                or max_retries_on_system_failure < 0:
            raise EngineConfigError(
                f"engine.max_retries_on_system_failure: must be a non-negative integer, got {max_retries_on_system_failure!r}"
            )
        if allowed_serializers is not None:
            from volley.serialize import ComputeSerializer

            try:
                ComputeSerializer(allowed_deserializer_types=allowed_serializers)
            except Exception as exc:
                raise EngineConfigError(f"engine.allowed_serializers: {exc}") from None
        self.endpoint_id = endpoint_id
        self.endpoint_dir = os.path.abspath(endpoint_dir)
        self.run_dir = os.path.join(self.endpoint_dir, working_dir)
        self.run_in_sandbox = bool(run_in_sandbox)
        self.max_retries = max_retries_on_system_failure
        self.allowed_serializers = allowed_serializers
        self._lock = threading.Lock()
        self._outstanding = 0
        self._stopping = False
        self.system_failures = 0
        # told when a task starts running (a worker took it), by engines that know; the agent
        # records it (volley.endpoint.attempts) to count the task's attempt if the agent dies
        self.on_start: Callable[[str], None] = _ignore

    # --- to implement -----------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        """How many tasks run at once; the agent sizes its prefetch from it."""
        raise NotImplementedError

    def _submit(self, task_id: str, body: bytes, spec: dict[str, Any],
                result_serializers: list[str] | None) -> Future:
        """Run one task; the future resolves to packed Result bytes or raises a system failure."""
        raise NotImplementedError

    def check_resource_specification(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Validate (and complete) a task's resource specification; raise ResourceSpecError."""
        if spec:
            raise ResourceSpecError(
                f"resource_specification is not supported on {self.type_name}.  "
                "For MPI apps, use MPIEngine (GlobusMPIEngine)."
            )
        return spec

    def cancel(self, task_id: str, force: bool) -> str:
        """Cancel a task this engine was given; return a :class:`CancelOutcome`.  A task that
        is dropped (or killed, with ``force``) resolves with a TaskCancelled Result.  By default
        a task handed to the engine is out of reach (Parsl runs it)."""
        return CancelOutcome.REFUSED if force else CancelOutcome.RUNNING

    def workers(self) -> dict[str, int]:
        """``total_workers`` and ``idle_workers`` for heartbeats."""
        raise NotImplementedError

    def problem(self) -> str | None:
        """Why the engine cannot run tasks any more (the agent then stops), or None."""
        return None

    # --- shared -----------------------------------------------------------------------------
    def start(self) -> None:
        os.makedirs(self.run_dir, exist_ok=True)

    def task_kwargs(self, result_serializers: list[str] | None) -> dict[str, Any]:
        return {
            "endpoint_id": self.endpoint_id,
            "run_dir": self.run_dir,
            "run_in_sandbox": self.run_in_sandbox,
            "result_serializers": result_serializers,
            "allowed_serializers": self.allowed_serializers,
        }

    def submit(self, task_id: str, body: bytes, resource_specification: dict[str, Any] | None,
               result_serializers: list[str] | None, max_retries: int | None = None,
               failures: Sequence[str] = ()) -> Future:
        """Run a task; ``max_retries`` (the submission's override) replaces the endpoint's
        ``max_retries_on_system_failure`` for it when given.  ``failures`` are the causes of
        attempts already lost (the agent died under them): they count against the limit, which
        for them is at least :data:`AGENT_DEATH_RETRIES`."""
        out: Future = Future()
        try:
            spec = self.check_resource_specification(dict(resource_specification or {}))
        except Exception as exc:
            # ResourceSpecError names the problem; anything else is a bug in a check, and
            # still only this task's error: an exception escaping here would stop the agent,
            # and the redelivered task would stop the next run too
            if not isinstance(exc, ResourceSpecError):
                log.exception("checking the resource specification of task %s failed", task_id)
                exc = ResourceSpecError(f"could not be checked: {type(exc).__name__}: {exc}")
            out.set_result(error_result(
                task_id, f"Failed to start task: InvalidResourceSpecification: {exc}",
                ResultCode.INVALID_RESOURCE_SPECIFICATION, f"remote error: {exc}", self.endpoint_id,
            ))
            return out
        with self._lock:
            self._outstanding += 1
        out.add_done_callback(self._finished)
        limit = self.max_retries if max_retries is None else max_retries
        if len(failures) > max(limit, AGENT_DEATH_RETRIES):
            self.system_failures += 1
            out.set_result(self._lost_result(
                task_id, list(failures),
                f"{limit}; a task the endpoint agent died under runs again at least {AGENT_DEATH_RETRIES} times"))
        else:
            self._attempt(out, task_id, body, spec, result_serializers, list(failures), limit)
        return out

    def _lost_result(self, task_id: str, failures: list[str], limit: int | str) -> bytes:
        last = failures[-1].strip().splitlines()[-1]
        return error_result(
            task_id,
            f"The endpoint lost this task {len(failures)} time(s) "
            f"(max_retries_on_system_failure={limit}):\n{attempts_text(failures)}",
            ResultCode.UNKNOWN_TASK_FAILURE, f"remote error: {last}", self.endpoint_id,
        )

    def _finished(self, _f: Future) -> None:
        with self._lock:
            self._outstanding -= 1

    def _attempt(self, out: Future, task_id: str, body: bytes, spec: dict[str, Any],
                 result_serializers: list[str] | None, failures: list[str], limit: int) -> None:
        if self._stopping:
            out.set_exception(EngineStopped(task_id))
            return
        try:
            inner = self._submit(task_id, body, spec, result_serializers)
        except EngineStopped as exc:
            out.set_exception(exc)
            return
        except Exception as exc:  # the backend refused the task (e.g. Parsl in a bad state)
            log.exception("engine could not start task %s", task_id)
            out.set_result(error_result(
                task_id, f"Failed to start task: {exc!r}", ResultCode.UNKNOWN_TASK_FAILURE,
                f"remote error: {exc}", self.endpoint_id,
            ))
            return

        def done(f: Future) -> None:
            exc = TaskCancelled("it was cancelled before it started") if f.cancelled() else f.exception()
            if exc is None:
                out.set_result(f.result())
                return
            if isinstance(exc, TaskCancelled):  # on request: not a failure, never retried
                out.set_result(cancelled_result(task_id, str(exc), self.endpoint_id))
                return
            if isinstance(exc, EngineStopped) or self._stopping:
                out.set_exception(EngineStopped(task_id))
                return
            # A system failure: the worker (or its node) died under the task.  Retry as
            # configured; then tell the client, with every attempt's cause.
            self.system_failures += 1
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()
            failures.append(text)
            if len(failures) <= limit:
                log.warning("task %s lost by the engine (%s); retry %d of %d", task_id, exc,
                            len(failures), limit)
                self._attempt(out, task_id, body, spec, result_serializers, failures, limit)
                return
            out.set_result(self._lost_result(task_id, failures, limit))

        inner.add_done_callback(done)

    @property
    def outstanding(self) -> int:
        return self._outstanding

    def status(self) -> dict[str, Any]:
        return {
            "engine_type": self.type_name,
            "outstanding_tasks": self._outstanding,
            "system_failures": self.system_failures,
            "force_cancel": self.can_force_cancel,
            "total_cores": os.cpu_count(),
            **self.workers(),
        }

    def shutdown(self) -> None:
        """Stop; tasks still waiting or running resolve with EngineStopped."""
        self._stopping = True
