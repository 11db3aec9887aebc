"""``Executor``: a ``concurrent.futures.Executor`` that runs functions on a remote endpoint.

``submit`` only enqueues; a submitter thread groups tasks into batches (by task group, endpoint,
resource specification, user endpoint config and result serializers), a small pool of sender
threads serializes each batch's arguments and sends it, and a per-task-group ``ResultWatcher`` streams results back over AMQPS.  Unlike upstream there is
no client-side burst limiter stalling bulk work (its arguments are accepted and kept), batches
go out concurrently, and a failed batch fails only its own futures.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor as _StdExecutor
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as _wait
from dataclasses import dataclass
from typing import Any

from volley.protocol.headers import MAX_SYSTEM_RETRIES
from volley.sdk.batch import as_optional_uuid
from volley.sdk.client import Client
from volley.sdk.future import ComputeFuture, cancel_all
from volley.sdk.outcome import resolve_document
from volley.sdk.retry import Retrying, RetryPolicy
from volley.sdk.watcher import all_watchers, watcher_for

log = logging.getLogger(__name__)

_REGISTERED_EXECUTORS: dict[int, Executor] = {}
_OWNER_SEQ = itertools.count(1)
_MAX_CONCURRENT_BATCHES = 4


@dataclass(slots=True)
class _TaskSubmissionInfo:
    # A plain slotted class: built once per submit() in the caller's thread, where a frozen
    # dataclass's object.__setattr__ per field costs more than the rest of the record.
    task_num: int
    task_group_uuid: uuid.UUID | None
    endpoint_uuid: uuid.UUID
    resource_specification: dict[str, Any] | None
    user_endpoint_config: dict[str, Any] | None
    result_serializers: list[str] | None
    max_retries_on_system_failure: int | None
    function_uuid: uuid.UUID
    args: tuple
    kwargs: dict
    function_id: str = ""  # str(function_uuid), computed once per function

    def group_key(self) -> tuple:
        return (
            self.task_group_uuid,
            self.endpoint_uuid,
            _json_key(self.resource_specification, True),
            _json_key(self.user_endpoint_config, True),
            _json_key(self.result_serializers, False),
            self.max_retries_on_system_failure,
        )


def _json_key(value: Any, sort_keys: bool) -> str:
    # json.dumps with keyword arguments builds a new encoder per call; the usual value is None
    return "null" if value is None else json.dumps(value, sort_keys=sort_keys)


def _check_json_dict(value: Any, type_msg: str, json_msg: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError(type_msg.format(type(value)))
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(json_msg) from exc
    return value


class Executor(_StdExecutor):
    _default_task_group_id: uuid.UUID | None = None

    def __init__(
        self,
        endpoint_id: Any = None,
        client: Client | None = None,
        task_group_id: Any = None,
        resource_specification: dict[str, Any] | None = None,
        user_endpoint_config: dict[str, Any] | None = None,
        label: str = "",
        batch_size: int = 128,
        amqp_port: int | None = None,
        api_burst_limit: int = 4,
        api_burst_window_s: int = 16,
        serializer: Any = None,
        result_serializers: Iterable[Any] | None = None,
        transport: str | None = None,
        max_retries_on_system_failure: int | None = None,
        retry_on: Iterable[type[BaseException]] = (),
        max_retries: int = 3,
        **kwargs: Any,
    ) -> None:
        for key in kwargs:
            raise TypeError(f"'{key}' is an invalid argument for {type(self).__name__}")
        from volley.transport import resolve

        self.transport = resolve(transport)
        self.client = client or Client()
        self.endpoint_id = endpoint_id
        # Upstream leaves this None until the first submit answers; the guide prints it before
        # submitting (to reload later), so a fresh id is chosen here and the service adopts it.
        self.task_group_id = task_group_id or Executor._default_task_group_id or uuid.uuid4()
        self.resource_specification = resource_specification
        self.user_endpoint_config = user_endpoint_config
        self.label = label
        self.batch_size = max(1, batch_size)
        self.amqp_port = amqp_port
        # accepted for compatibility; submissions are never throttled client-side
        self.api_burst_limit = min(8, max(1, api_burst_limit))
        self.api_burst_window_s = min(32, max(1, api_burst_window_s))
        if serializer:
            self.serializer = serializer
        self._result_serializer_paths: list[str] | None = None
        self.result_serializers = result_serializers
        self.max_retries_on_system_failure = max_retries_on_system_failure
        # opt-in: tasks whose function raised one of these are sent again (volley.sdk.retry)
        self._retry_policy = RetryPolicy(retry_on, max_retries)
        self._retrying: set[ComputeFuture] = set()  # between a failed attempt and the next's send
        self._retry_queue: queue.SimpleQueue = queue.SimpleQueue()
        self._retry_sender: ThreadPoolExecutor | None = None
        self.task_count_submitted = 0
        self._task_counter = 0
        self._function_registry: dict[Any, str] = {}
        self._registry_lock = threading.Lock()
        self._shutdown_lock = threading.RLock()
        self._stopped = False
        # No per-Executor set of futures (and no done-callback per future to maintain one): a
        # future is queued, being sent, failed, or watched by its task group's ResultWatcher,
        # tagged with this Executor's id; shutdown() waits on exactly those.
        self._count_lock = threading.Lock()
        # function id as given -> (UUID, canonical str): parsed once, not per submit()
        self._function_uuids: dict[Any, tuple[uuid.UUID, str]] = {}
        self._tasks_to_send: queue.SimpleQueue = queue.SimpleQueue()
        self._senders = ThreadPoolExecutor(_MAX_CONCURRENT_BATCHES, thread_name_prefix="volley-submit")
        self._task_submitter = threading.Thread(target=self._submit_loop, name="TaskSubmitter", daemon=True)
        self._task_submitter.start()
        # Which futures are this Executor's: upstream's executor_id is id(self), and CPython
        # reuses the id of a collected object, so a later Executor could adopt (and wait on) a
        # dead one's futures; this number is never reused in the process.
        self._owner = next(_OWNER_SEQ)
        _REGISTERED_EXECUTORS[id(self)] = self

    def __repr__(self) -> str:
        parts = []
        if self.label:
            parts.append(f"{self.label}; ")
        if self.endpoint_id:
            parts.append(f"ep_id:{self.endpoint_id}; ")
        return f"Executor<{''.join(parts)}tg_id:{self.task_group_id}; bs:{self.batch_size}>"

    # --- properties -------------------------------------------------------------------------------
    @property
    def endpoint_id(self) -> uuid.UUID | None:
        return self._endpoint_id

    @endpoint_id.setter
    def endpoint_id(self, value: Any) -> None:
        self._endpoint_id = as_optional_uuid(value)

    @property
    def task_group_id(self) -> uuid.UUID | None:
        return self._task_group_id

    @task_group_id.setter
    def task_group_id(self, value: Any) -> None:
        self._task_group_id = as_optional_uuid(value)
        if self._task_group_id:
            Executor._default_task_group_id = self._task_group_id

    @property
    def resource_specification(self) -> dict[str, Any] | None:
        return self._resource_specification

    @resource_specification.setter
    def resource_specification(self, value: Any) -> None:
        self._resource_specification = _check_json_dict(
            value, "Resource specification must be of type dict,not {}",
            "Resource specification must be JSON-serializable",
        )

    @property
    def user_endpoint_config(self) -> dict[str, Any] | None:
        return self._user_endpoint_config

    @user_endpoint_config.setter
    def user_endpoint_config(self, value: Any) -> None:
        self._user_endpoint_config = _check_json_dict(
            value, "Config must be of type dict, not {}", "Configuration must be JSON-serializable"
        )

    @property
    def serializer(self) -> Any:
        return self.client.fx_serializer

    @serializer.setter
    def serializer(self, value: Any) -> None:
        from volley.serialize import ComputeSerializer

        if not isinstance(value, ComputeSerializer):
            raise TypeError(f"Expected ComputeSerializer, got {type(value)}")
        self.client.fx_serializer = value

    @property
    def result_serializers(self) -> Iterable[Any] | None:
        return self._result_serializers

    @result_serializers.setter
    def result_serializers(self, value: Iterable[Any] | None) -> None:
        if value is None:
            self._result_serializers, self._result_serializer_paths = None, None
            return
        from volley.serialize.facade import validate_strategylike

        value = list(value)
        self._result_serializer_paths = [validate_strategylike(v).import_path for v in value]
        self._result_serializers = value

    @property
    def max_retries_on_system_failure(self) -> int | None:
        """Volley's own: how often a task whose worker or endpoint died runs again, for this
        Executor's tasks; ``None`` leaves it to the endpoint's setting."""
        return self._max_retries_on_system_failure

    @max_retries_on_system_failure.setter
    def max_retries_on_system_failure(self, value: int | None) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 0 <= value <= MAX_SYSTEM_RETRIES):
            raise ValueError(
                f"max_retries_on_system_failure must be an integer from 0 to {MAX_SYSTEM_RETRIES} "
                f"(or None for the endpoint's setting), got {value!r}"
            )
        self._max_retries_on_system_failure = value

    @property
    def retry_on(self) -> tuple[type[BaseException], ...]:
        """Volley's own: exception types whose tasks are sent again (at most ``max_retries``
        times); empty (the default): a task whose function raised is never retried."""
        return self._retry_policy.retry_on

    @property
    def max_retries(self) -> int:
        return self._retry_policy.max_retries

    # --- registration ---------------------------------------------------------------------------
    def register_function(self, fn: Callable, function_id: Any = None, **func_register_kwargs: Any) -> str:
        if self._stopped:
            raise RuntimeError(f"{self!r} is shutdown; refusing to register function")
        with self._registry_lock:
            cached = self._function_registry.get(fn)
            if cached is not None:
                if function_id is not None and str(function_id) == cached:
                    log.warning("Function already registered as function id: %s", cached)
                    return cached
                msg = f"Function already registered as function id: {cached}"
                if function_id is not None:
                    msg += f" (attempted id: {function_id})"
                raise ValueError(msg)
            if function_id is not None:
                self._function_registry[fn] = str(function_id)
                return str(function_id)
            func_register_kwargs.pop("function", None)
            try:
                fid = self.client.register_function(fn, **func_register_kwargs)
            except Exception:
                self.shutdown(wait=False, cancel_futures=True)
                raise
            self._function_registry[fn] = fid
            return fid

    def register_source_code(self, source: str, function_name: str, **registration_kwargs: Any) -> str:
        key = hash(source)
        with self._registry_lock:
            if key in self._function_registry:
                raise ValueError(
                    f"Function already registered as function id: {self._function_registry[key]}"
                )
            try:
                fid = self.client.register_source_code(source, function_name, **registration_kwargs)
            except Exception:
                self.shutdown(wait=False, cancel_futures=True)
                raise
            self._function_registry[key] = fid
            return fid

    # --- submission -----------------------------------------------------------------------------
    def submit(self, fn: Callable, *args: Any, **kwargs: Any) -> ComputeFuture:  # type: ignore[override]
        if self._stopped:
            raise RuntimeError(f"{self!r} is shutdown; no new functions may be executed")
        with self._registry_lock:
            fid = self._function_registry.get(fn)
        if fid is None:
            fid = self.register_function(fn)
        return self.submit_to_registered_function(fid, args, kwargs)

    def submit_to_registered_function(self, function_id: Any, args: Any = None, kwargs: Any = None) -> ComputeFuture:
        if self._stopped:
            raise RuntimeError(f"{self!r} is shutdown; no new functions may be executed")
        if not self.endpoint_id:
            self.shutdown(wait=False, cancel_futures=True)
            raise ValueError(
                "No endpoint_id set.  Did you forget to set it at construction?\n"
                "  Hint:\n\n"
                "    gce = Executor(endpoint_id=<ep_id>)\n"
                "    gce.endpoint_id = <ep_id>    # alternative"
            )
        self._task_counter += 1
        cacheable = isinstance(function_id, str | uuid.UUID)
        fid = self._function_uuids.get(function_id) if cacheable else None
        if fid is None:
            fuuid = uuid.UUID(str(function_id))  # a malformed id raises here, as before
            fid = (fuuid, str(fuuid))
            if cacheable:
                self._function_uuids[function_id] = fid
        spec, uep, rser = self._resource_specification, self._user_endpoint_config, self._result_serializer_paths
        info = _TaskSubmissionInfo(
            self._task_counter,
            self.task_group_id,
            self.endpoint_id,
            None if spec is None else copy.deepcopy(spec),
            None if uep is None else copy.deepcopy(uep),
            None if rser is None else list(rser),
            self._max_retries_on_system_failure,
            fid[0],
            tuple(args or ()),
            dict(kwargs or {}),
            fid[1],
        )
        fut = ComputeFuture()
        if self._retry_policy.retry_on:
            fut._retry = Retrying(self._retry_policy, functools.partial(self._resubmit, fut, info))
        self._tasks_to_send.put((fut, info))
        return fut

    def _resubmit(self, fut: ComputeFuture, info: _TaskSubmissionInfo) -> None:
        """Send a failed task again (``retry_on``), as a new task of the same future; called
        from the result watcher, so the sending happens on a thread of its own."""
        if fut._is_done():
            return
        fut.task_id = None  # a cancel() meanwhile is local, and the send cancels the new task
        fut._metadata = {}  # the old one is shared by its whole batch
        with self._count_lock:
            self._retrying.add(fut)
            if self._retry_sender is None:
                self._retry_sender = ThreadPoolExecutor(1, thread_name_prefix="volley-retry")
        self._retry_queue.put((fut, info))
        try:
            self._retry_sender.submit(self._send_retries)
        except RuntimeError:  # the interpreter is exiting: send from here
            self._send_retries()

    def _send_retries(self) -> None:
        """Send every queued retry, grouped into batches like first submissions."""
        groups: dict[tuple, list[tuple[ComputeFuture, _TaskSubmissionInfo]]] = {}
        while True:
            try:
                fut, info = self._retry_queue.get_nowait()
            except queue.Empty:
                break
            groups.setdefault(info.group_key(), []).append((fut, info))
        for group in groups.values():
            for i in range(0, len(group), self.batch_size):
                chunk = group[i : i + self.batch_size]
                try:
                    self._submit_tasks(chunk)
                finally:
                    with self._count_lock:
                        self._retrying.difference_update(f for f, _ in chunk)

    def _submit_loop(self) -> None:
        q = self._tasks_to_send
        while True:
            item = q.get()
            if item is None:
                return
            groups: dict[tuple, list[tuple[ComputeFuture, _TaskSubmissionInfo]]] = {}
            done = False
            while True:
                fut, info = item
                if not fut._is_cancelled():
                    group = groups.setdefault(info.group_key(), [])
                    group.append((fut, info))
                    if len(group) >= self.batch_size:
                        break
                try:
                    item = q.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    done = True
                    break
            for group in groups.values():
                self._send_group(group)
            if done:
                return

    def _send_group(self, group: list[tuple[ComputeFuture, _TaskSubmissionInfo]]) -> None:
        """Send one group now, unless the task group is still unknown: then the first response
        decides it, so later groups wait for it (keeps one task group per Executor)."""
        if group[0][1].task_group_uuid is None and self.task_group_id is None:
            self._submit_tasks(group)
            return
        try:
            self._senders.submit(self._submit_tasks, group)
        except RuntimeError:
            # the interpreter is exiting (ThreadPoolExecutor takes no new work once the main
            # thread has finished) while tasks are still queued: send them from this thread,
            # so they still resolve before exit as concurrent.futures promises
            self._submit_tasks(group)

    def _submit_tasks(self, group: list[tuple[ComputeFuture, _TaskSubmissionInfo]]) -> None:
        first = group[0][1]
        futures = [f for f, _ in group]
        try:
            tg = first.task_group_uuid or self.task_group_id
            batch = self.client.create_batch(
                task_group_id=tg,
                resource_specification=first.resource_specification,
                user_endpoint_config=first.user_endpoint_config,
                create_websocket_queue=True,
                result_serializers=first.result_serializers,
                max_retries_on_system_failure=first.max_retries_on_system_failure,
            )
            batch.task_group_id = tg  # None on a first submit: the service picks the group
            add = batch._add_task
            for _, info in group:
                add(info.function_uuid, info.args, info.kwargs)
            resp = self.client.batch_run(first.endpoint_uuid, batch)
            tg_uuid = uuid.UUID(resp["task_group_id"])
            request_uuid = uuid.UUID(resp["request_id"])
            ep_uuid = uuid.UUID(resp["endpoint_id"])
            tasks = resp["tasks"]
        except Exception as exc:
            for f in futures:
                if not f.done():
                    f.set_exception(exc)
            log.error("%r: submitting %d tasks failed: %s", self, len(group), exc)
            return
        if self.task_group_id != tg_uuid:
            self.task_group_id = tg_uuid
        by_fn: dict[str, list[ComputeFuture]] = {}
        for f, info in group:
            by_fn.setdefault(info.function_id, []).append(f)
        to_watch = []
        meta = {"request_uuid": request_uuid, "endpoint_uuid": ep_uuid, "task_group_uuid": tg_uuid,
                "executor_id": id(self), "_owner": self._owner, "_client": self.client}
        for fid, futs in by_fn.items():
            ids = tasks.get(fid)
            if ids is None or len(ids) != len(futs):
                which = "ignored tasks" if ids is None else "only partially initiated requested tasks"
                err = Exception(f"The Volley service {which} for function {fid}!")
                for f in futs:
                    if not f.done():
                        f.set_exception(err)
                continue
            with self._count_lock:  # sender threads run concurrently; += is not atomic
                self.task_count_submitted += len(ids)
            for f, tid in zip(futs, ids, strict=True):
                f.task_id = tid
                if f._metadata:
                    f._metadata.update(meta)
                else:
                    f._metadata = meta  # one dict per batch: fewer objects for the GC to walk
                to_watch.append(f)
        late = [f.task_id for f in to_watch if f._is_cancelled()]
        if late:  # cancelled while the submission was on its way: the service cancels them too
            try:
                self.client.cancel_task(late)
            except Exception as exc:
                log.warning("%r: could not cancel %d tasks cancelled during their submission: %s", self, len(late), exc)
        if to_watch:
            watcher = watcher_for(str(tg_uuid), self.client, transport=self.transport, port=self.amqp_port)
            try:
                watcher.watch(to_watch)
            except RuntimeError:
                watcher_for(str(tg_uuid), self.client, transport=self.transport, port=self.amqp_port).watch(to_watch)

    # --- reload ---------------------------------------------------------------------------------
    def reload_tasks(self, task_group_id: Any = None) -> Iterable[ComputeFuture]:
        if task_group_id:
            self.task_group_id = task_group_id
        if self.task_group_id is None:
            raise ValueError("must specify a task_group_id in order to reload tasks")
        tg = str(self.task_group_id)
        listed: list[dict[str, Any]] = []
        # Volley's own parameter: this SDK reads result batches (docs/protocol.md)
        resp = self.client._api.get(f"/v2/taskgroup/{tg}", params={"volley_result_batches": "true"})
        while True:
            if resp.get("taskgroup_id") != tg:
                raise ValueError(f"Server did not respond with requested TaskGroup Tasks.  (requested: {tg})")
            listed.extend(resp.get("tasks", []))
            if not resp.get("next"):  # a Volley service pages large groups; upstream never does
                break
            resp = self.client._api.get(f"/v2/taskgroup/{tg}", params={"after": resp["next"]})
        watcher = watcher_for(tg, self.client, transport=self.transport, port=self.amqp_port)
        already = {f.task_id for f in watcher.open_futures()}
        futures = {}
        for t in listed:
            if t["id"] not in already:
                fut = ComputeFuture(t["id"])
                fut._metadata.update(task_group_uuid=self.task_group_id, executor_id=id(self),
                                     _owner=self._owner, _client=self.client)
                futures[t["id"]] = fut
        ids = list(futures)
        pending = []
        serializer = self.client.fx_serializer
        for i in range(0, len(ids), self.batch_size):
            chunk = ids[i : i + self.batch_size]
            results = self.client._api.post("/v2/batch_status", json={"task_ids": chunk})["results"]
            for tid in chunk:
                # the same reading of a stored task as the result watcher's: a cancelled task's
                # future is cancelled, a failure keeps its error code
                if not resolve_document(futures[tid], results.get(tid, {}), serializer):
                    pending.append(futures[tid])
        if pending:
            watcher.watch(pending)
        return futures.values()

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[Any]:
        """As ``concurrent.futures.Executor.map`` (``chunksize`` is ignored there too, but by
        process pools).  Abandoned early -- a timeout, a failed task, the iterator dropped --
        it cancels the tasks whose results were not taken with one request per thousand, not
        one each."""
        end = None if timeout is None else timeout + time.monotonic()
        fs = [self.submit(fn, *args) for args in zip(*iterables, strict=False)]

        def results() -> Iterator[Any]:
            try:
                fs.reverse()
                while fs:
                    fut = fs.pop()
                    try:
                        value = fut.result(None if end is None else end - time.monotonic())
                    except BaseException:
                        fs.append(fut)
                        raise
                    del fut  # as the standard map: a result taken is not held here
                    yield value
            finally:
                cancel_all(fs, given_up=True)

        return results()

    # --- shutdown -------------------------------------------------------------------------------
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._shutdown_lock:
            if self._stopped:
                return
            self._stopped = True
            if cancel_futures:
                while True:
                    try:
                        item = self._tasks_to_send.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None:
                        item[0].cancel()
                self._cancel_sent()
            self._tasks_to_send.put(None)
        if wait and threading.current_thread() is not self._task_submitter:
            self._task_submitter.join()
            self._senders.shutdown(wait=True)
            # every future not resolved yet is now with a watcher (the submitter and the senders
            # are done): wait for this Executor's
            self._wait_outstanding()
        else:
            self._senders.shutdown(wait=False)
        _REGISTERED_EXECUTORS.pop(id(self), None)
        if not _REGISTERED_EXECUTORS:
            for w in all_watchers():
                w.stop_when_idle()


    def cancel_running(self, future: ComputeFuture) -> bool:
        """Stop ``future``'s task even if it is running (Volley's own): on a ProcessPoolEngine
        endpoint its worker process is killed and the future ends cancelled.  Raises
        ``ComputeAPIError`` (CANCEL_NOT_SUPPORTED) where the endpoint's engine cannot."""
        return future.cancel(force=True)

    def _cancel_sent(self) -> None:
        """Cancel this Executor's tasks that the service has and that have not started
        (``shutdown(cancel_futures=True)``); running ones finish."""
        me = self._owner
        cancel_all([f for w in all_watchers() for f in w.open_futures()
                    if f._metadata.get("_owner") == me and not f._is_done() and f.task_id], given_up=False)

    def _wait_outstanding(self) -> None:
        """Wait until none of this Executor's watched futures is pending.  A future cancelled
        meanwhile (``map`` cancels on timeout) is CANCELLED, which ``wait`` never counts as
        done, so the set is re-read every second rather than waited on once."""
        me = self._owner
        while True:
            # a future whose cancel is waiting for its endpoint (one that is down) is given up
            outstanding = [f for w in all_watchers() for f in w.open_futures()
                           if f._metadata.get("_owner") == me and not f._is_done() and not f._cancel_requested]
            with self._count_lock:
                outstanding += [f for f in self._retrying if not f._is_done()]
            if not outstanding:
                return
            _wait(outstanding, timeout=1.0)


def _wait_at_exit() -> None:
    """Like concurrent.futures: the interpreter exits only once every open future is resolved."""
    threading.main_thread().join()
    for ex in list(_REGISTERED_EXECUTORS.values()):
        try:
            ex.shutdown(wait=True)
        except Exception:
            log.exception("error shutting down %r at exit", ex)
    for w in all_watchers():
        w.stop_when_idle()
        w.join()


threading.Thread(target=_wait_at_exit, name="volley-exit", daemon=False).start()
