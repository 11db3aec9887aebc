"""The endpoint agent: register, consume the task queue, run tasks on the engine, publish results.

Threads and who owns what:

* the **main thread** owns the task consumer (the transports' consumers are single-threaded):
  it takes deliveries (exclusive consumer, bounded prefetch), hands tasks to the engine, and
  acks a delivery only once that task's result is confirmed by the broker;
* the **result thread** publishes finished results in batches with publisher confirms; a result
  the broker does not confirm goes to ``unacked_results/`` and is re-sent until it is;
* the **heartbeat thread** publishes status reports (workers, queue depth, ...).

No lost work: a delivery stays unacked while its task waits or runs (the local broker's
``consumer_timeout`` is 7 days, so day-long tasks are not reclaimed), so if this process dies
the broker hands every such task to the next run of the endpoint, which runs it again.  A task
whose result sits in ``unacked_results/`` is not run again: the stored result is re-sent.  A
lost worker yields an error Result naming the cause (after the configured retries).

Broker outages are waited out, however long (``$VOLLEY_GIVE_UP_AFTER`` sets a limit): the task
consumer runs in the one consume-and-reconnect loop (``volley.transport.reconnect``), results
that cannot be published wait in ``unacked_results/``, and tasks keep running meanwhile; their
redeliveries after the reconnect are matched to them, not run again.
"""

from __future__ import annotations

import fcntl
import heapq
import json
import logging
import os
import queue
import signal
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from volley.endpoint.config import EndpointConfig
from volley.endpoint.engines import Engine, EngineStopped, build_engine
from volley.endpoint.engines.base import error_result
from volley.endpoint.store import ResultStore
from volley.private_files import private_dir, private_file, write_private
from volley.protocol import topology as topo
from volley.protocol.messages import pack_status_report
from volley.transport import Consumer, Publisher, open_consumer, open_publisher
from volley.transport.base import ACCESS_REFUSED, channel_code
from volley.transport.reconnect import ConsumeLoop, GaveUp, Outage, ReconnectPolicy
from volley.version import __version__

log = logging.getLogger(__name__)

# How often stored (unconfirmed) results are re-sent.
RESEND_PERIOD = 2.0
# Task ids whose results were confirmed recently: a redelivery of one is acked, not rerun.
RECENT_LIMIT = 20_000


# How soon a confirmed result's ack goes out while tasks are in flight.  A long wait here
# capped a whole stack at about prefetch / wait tasks per second (~90/s at the default).
ACK_POLL_S = 0.005


class AgentError(RuntimeError):
    """The agent cannot go on; the message names the cause and what to do."""


class AlreadyRunning(AgentError):
    pass


class QueueHeld(AgentError):
    """Another consumer holds the exclusive task queue: a second instance of this endpoint."""


@dataclass
class Pending:
    generation: int  # which consumer the delivery came from; tags of older ones are void
    tag: int


def _held_by_another(exc: BaseException) -> bool:
    # 403 alone also means "no permission" (a broker that lost the endpoint's grants, to be
    # restored by the service): only the exclusive-use refusal means a second instance
    return channel_code(exc) == ACCESS_REFUSED and "exclusive" in str(exc).lower()


class Agent:
    def __init__(self, name: str, directory: Path, config: EndpointConfig, client: Any,
                 *, transport: str | None = None) -> None:
        self.name = name
        self.dir = directory
        self.config = config
        self.client = client
        self.transport = transport
        self.store = ResultStore(directory / "unacked_results")
        self._stop = threading.Event()
        self.stop_reason = ""
        self._done: queue.SimpleQueue[tuple[str, bytes] | None] = queue.SimpleQueue()
        self._confirmed: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._in_flight: dict[str, Pending] = {}
        # unsettled delivery tags of the current consumer: a min-heap (entries of settled tags
        # are dropped lazily) and the set of those still open
        self._open_heap: list[int] = []
        self._open_tags: set[int] = set()
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._lock_file: Any = None
        self.endpoint_id: str | None = None
        self.engine: Engine | None = None
        self.intake: ConsumeLoop | None = None
        self.publisher: Publisher | None = None
        self.generation = 0
        self.received = 0
        self.completed = 0
        self.rejected = 0
        self.started = time.time()
        self._reg: dict[str, Any] = {}
        self._results_route = ("", "")
        self._heartbeats_route = ("", "")
        self._threads: list[threading.Thread] = []
        self._consuming = False  # true once the task queue was ours
        self.prefetch = 0
        self.policy = ReconnectPolicy.default()

    # --- start-up -------------------------------------------------------------------------------
    def _take_lock(self) -> None:
        private_dir(self.dir)
        f = open(private_file(self.dir / "daemon.lock"), "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            pidfile = self.dir / "daemon.pid"
            pid = pidfile.read_text().strip() if pidfile.exists() else "?"
            raise AlreadyRunning(
                f"endpoint {self.name!r} is already running (pid {pid}); stop it first "
                f"(`volley endpoint stop {self.name}`)"
            ) from None
        self._lock_file = f
        write_private(self.dir / "daemon.pid", str(os.getpid()), fsync=False)

    def _register(self) -> dict[str, Any]:
        id_file = self.dir / "endpoint.json"
        known = json.loads(id_file.read_text())["endpoint_id"] if id_file.exists() else None
        try:
            reg = self.client.register_endpoint(
                self.name,
                endpoint_id=known,
                display_name=self.config.display_name or self.name,
                allowed_functions=self.config.allowed_functions,
                metadata={
                    "endpoint_version": __version__,
                    "hostname": socket.gethostname(),
                    "local_user": os.environ.get("USER", ""),
                    "engine": self.config.engine_type,
                    "endpoint_config": (self.dir / "config.yaml").read_text()
                    if (self.dir / "config.yaml").exists() else None,
                },
            )
        except Exception as exc:  # unreachable, refused token, 4xx: nothing can run without an id
            raise AgentError(f"could not register endpoint {self.name!r} with the service: {exc}") from exc
        endpoint_id = str(reg["endpoint_id"])
        if known and known != endpoint_id:
            raise AgentError(f"the service assigned endpoint id {endpoint_id}, but this endpoint is {known}")
        self.endpoint_id = endpoint_id
        write_private(id_file, json.dumps({"endpoint_id": endpoint_id}))
        return reg

    @staticmethod
    def _route(info: dict[str, Any], default_exchange: str, default_key: str) -> tuple[str, str]:
        kw = info.get("queue_publish_kwargs") or {}
        return str(kw.get("exchange") or info.get("exchange") or default_exchange), str(kw.get("routing_key") or default_key)

    def _amqp(self) -> dict[str, Any]:
        return {"transport": self.transport, "ca_file": getattr(self.client, "ca_file", None),
                "port": self.config.amqp_port}

    def run(self) -> None:
        self._take_lock()
        try:
            self._run()
        finally:
            (self.dir / "daemon.pid").unlink(missing_ok=True)
            (self.dir / "daemon.ready").unlink(missing_ok=True)
            if self._lock_file is not None:
                self._lock_file.close()

    def _run(self) -> None:
        reg = self._reg = self._register()
        eid = self.endpoint_id or ""
        self._results_route = self._route(reg["result_queue_info"], topo.RESULTS_EXCHANGE, topo.results_routing_key(eid))
        self._heartbeats_route = self._route(
            reg["heartbeat_queue_info"], topo.HEARTBEATS_EXCHANGE, topo.heartbeats_routing_key(eid)
        )
        self.engine = build_engine(
            self.config.engine_type, self.config.engine_options(), endpoint_id=eid,
            endpoint_dir=str(self.dir), run_in_sandbox=self.config.sandbox,
        )
        self.prefetch = self.config.prefetch or 2 * self.engine.capacity + 8
        self.publisher = self._open_publisher(reg["result_queue_info"]["connection_url"])
        if self.publisher is None:
            return  # stopped while waiting for the broker
        self.intake = ConsumeLoop(
            f"task intake of endpoint {self.name}",
            self._open_task_consumer,
            self._dispatch_batch,
            policy=self.policy,
            max_batch=256,
            # while tasks run, come back often: their acks (which free prefetch credit for the
            # next deliveries) are sent from this thread, between waits; idle, wait long
            timeout=lambda: ACK_POLL_S if self._in_flight else 0.2,
            after_wait=self._after_wait,
            on_connected=self._connected,
            should_stop=self._stop.is_set,
            close_on_exit=False,  # _shutdown still acks the tasks that finish in the grace
            logger=log,
        )
        try:
            # the queue must be ours before anything starts: a refused second instance starts
            # nothing; a broker not up yet is waited for
            first = self._wait_for_broker("task consumer", self._open_task_consumer)
            if first is None:
                return  # stopped while waiting for the broker
            self._consuming = True
            # the engine starts only once the queue is ours: a refused second instance starts nothing
            self.engine.start()
            self._threads = [
                threading.Thread(target=self._result_loop, name="volley-results", daemon=True),
                threading.Thread(target=self._heartbeat_loop, name="volley-heartbeat", daemon=True),
            ]
            for t in self._threads:
                t.start()
            # `volley endpoint start --detach` waits for this: registered, consuming, engine up
            write_private(self.dir / "daemon.ready", str(os.getpid()), fsync=False)
            log.info("endpoint %s (%s) consuming %s with %s, prefetch %d", self.name, self.endpoint_id,
                     reg["task_queue_info"]["queue"], self.engine.type_name, self.prefetch)
            self.intake.run(first)  # until stopped; raises GaveUp past $VOLLEY_GIVE_UP_AFTER
        except GaveUp as exc:
            raise AgentError(str(exc)) from exc
        finally:
            self._shutdown()

    def stop(self, *_: Any, reason: str = "stop requested") -> None:
        if not self._stop.is_set():
            self.stop_reason = reason
        self._stop.set()

    # --- the broker -----------------------------------------------------------------------------
    @property
    def consumer(self) -> Consumer | None:
        return self.intake.consumer if self.intake is not None else None

    @property
    def consumer_restarts(self) -> int:
        return max(0, self.intake.connections - 1) if self.intake is not None else 0

    def _wait_for_broker(self, what: str, attempt: Any) -> Any:
        """``attempt()`` until it works, waiting out a broker outage with the shared policy;
        None if the agent is stopped meanwhile."""
        outage = Outage(f"endpoint {self.name}: {what}", self.policy, logger=log)
        while not self._stop.is_set():
            try:
                result = attempt()
            except ConnectionError as exc:
                try:
                    delay = outage.failed(exc)
                except GaveUp as gave_up:
                    raise AgentError(str(gave_up)) from exc
                self._stop.wait(delay)
                continue
            outage.recovered()
            return result
        return None

    def _open_publisher(self, url: str) -> Publisher | None:
        def attempt() -> Publisher:
            publisher = open_publisher(url, **self._amqp())
            try:
                # upstream's publishers passive-declare first: a missing exchange fails here, loudly
                publisher.declare_exchange(self._results_route[0], "topic", passive=True)
                publisher.declare_exchange(self._heartbeats_route[0], "topic", passive=True)
            except BaseException:
                publisher.close()
                raise
            return publisher

        return self._wait_for_broker("result publisher", attempt)

    def _open_task_consumer(self) -> Consumer:
        info = self._reg["task_queue_info"]
        try:
            consumer = open_consumer(
                info["connection_url"], info["queue"], prefetch=self.prefetch, exclusive=True, **self._amqp(),
            )
        except ConnectionError as exc:
            if _held_by_another(exc):
                raise QueueHeld(
                    f"the task queue {info['queue']} is held by another consumer: a second instance of "
                    f"endpoint {self.name!r} ({self.endpoint_id}) is running, perhaps on another machine; "
                    f"stop it first ({exc})"
                ) from exc
            raise
        self.generation += 1
        self._open_heap.clear()  # the old consumer's tags are void
        self._open_tags.clear()
        return consumer

    def _connected(self, _consumer: Consumer, reconnected: bool) -> None:
        if reconnected:
            # tasks still running keep running; their redeliveries are matched to them
            log.warning("task consumer reopened (restart %d); %d tasks held", self.consumer_restarts,
                        len(self._in_flight))

    def _dispatch_batch(self, consumer: Consumer, batch: Sequence[Any]) -> None:
        for d in batch:
            self._dispatch(consumer, d)

    def _after_wait(self, consumer: Consumer) -> None:
        self._ack_confirmed(consumer)
        self._check_health()

    def _check_health(self) -> None:
        assert self.engine is not None
        problem = self.engine.problem()
        if problem:
            raise AgentError(f"the engine cannot run tasks: {problem}")
        for t in self._threads:
            if not t.is_alive() and not self._stop.is_set():
                raise AgentError(f"internal thread {t.name} died; see the log above")

    @staticmethod
    def _parse_headers(headers: dict[str, Any], task_id: str) -> tuple[str | None, dict[str, Any], list[str] | None, list[str]]:
        problems = []
        fid = headers.get("function_uuid")
        if not fid:
            problems.append("missing header 'function_uuid'")
        tid = headers.get("task_uuid")
        if not tid:
            problems.append("missing header 'task_uuid'")
        elif str(tid) != task_id:
            problems.append(f"header task_uuid {tid!r} does not match the task id {task_id} in the body")
        spec: Any = headers.get("resource_specification")
        if isinstance(spec, bytes):
            spec = spec.decode(errors="replace")
        if isinstance(spec, str):
            try:
                spec = json.loads(spec)
            except (ValueError, RecursionError) as exc:  # a deeply nested header, too
                problems.append(f"header 'resource_specification' is not JSON: {exc}")
                spec = None
        if spec is not None and not isinstance(spec, dict):
            problems.append(f"header 'resource_specification' must be a JSON object, got {spec!r}")
            spec = None
        serializers = headers.get("result_serializers")
        if serializers is not None and (
            not isinstance(serializers, list) or not all(isinstance(s, (str, bytes)) for s in serializers)
        ):
            problems.append(f"header 'result_serializers' must be a list of import paths, got {serializers!r}")
            serializers = None
        if serializers:
            serializers = [s.decode() if isinstance(s, bytes) else s for s in serializers]
        return (str(fid) if fid else None), (spec or {}), (serializers or None), problems

    def _dispatch(self, consumer: Consumer, d: Any) -> None:
        assert self.engine is not None
        m = d.message
        if m is None or m.kind != "task" or not m.task_id:
            # no task id to answer to: dead-letter it (the task queue has a DLX) with a log line
            why = d.invalid or f"a {getattr(m, 'kind', '?')!r} message is not a task"
            log.error("dead-lettering an unusable task message (%s)", why)
            self.rejected += 1
            consumer.nack(d.tag, requeue=False)
            return
        task_id = m.task_id
        if task_id in self._in_flight:
            # redelivered after our consumer reconnected (or sent twice): it is already running
            # (or its result is stored); answer the new delivery when that result is confirmed
            old = self._in_flight[task_id]
            if old.generation == self.generation and old.tag in self._open_tags:
                self._open_tags.discard(old.tag)
                consumer.ack(old.tag)  # the new delivery carries the task from here on
            self._track(task_id, d.tag)
            return
        if task_id in self._recent:
            consumer.ack(d.tag)  # its result is confirmed already
            return
        self._track(task_id, d.tag)
        self.received += 1
        if self.store.has(task_id):
            return  # ran before a crash; the stored result is re-sent, then this is acked
        fid, spec, serializers, problems = self._parse_headers(d.headers or {}, task_id)
        if problems:
            text = "; ".join(problems)
            log.error("task %s rejected: %s", task_id, text)
            self.rejected += 1
            self._done.put((task_id, error_result(
                task_id, f"Task message rejected by endpoint {self.endpoint_id}: {text}",
                "CouldNotExecuteUserTaskError", f"remote error: {text}", self.endpoint_id,
            )))
            return
        allowed = self.config.allowed_functions
        if allowed is not None and fid not in allowed:
            text = f"Function {fid} not permitted on endpoint {self.endpoint_id}"
            self._done.put((task_id, error_result(task_id, text, "FUNCTION_NOT_ALLOWED", text, self.endpoint_id)))
            return
        fut = self.engine.submit(task_id, d.body, spec, serializers)
        fut.add_done_callback(partial(self._finished, task_id))

    def _finished(self, task_id: str, f: Future) -> None:
        exc = f.exception()
        if isinstance(exc, EngineStopped):
            return  # no result: the delivery stays unacked and the task runs again next time
        if exc is not None:
            log.error("engine failed task %s: %r", task_id, exc)
            body = error_result(task_id, f"The endpoint's engine failed this task: {exc!r}",
                                "UNKNOWN_TASK_FAILURE", f"remote error: {exc!r}", self.endpoint_id)
        else:
            body = f.result()
        self._done.put((task_id, body))

    def _track(self, task_id: str, tag: int) -> None:
        self._in_flight[task_id] = Pending(self.generation, tag)
        heapq.heappush(self._open_heap, tag)
        self._open_tags.add(tag)

    def _ack_confirmed(self, consumer: Consumer | None) -> None:
        """Ack the deliveries of tasks whose results the broker confirmed.  Those below the
        oldest delivery still open go in one ``ack_through`` (a single ack per task cost the
        broker ~20 us and this process ~45 us more per message, measured on this machine);
        the others, finished ahead of an older task, are acked one by one."""
        tags: list[int] = []
        while True:
            try:
                task_id = self._confirmed.get_nowait()
            except queue.Empty:
                break
            self.completed += 1
            self._recent[task_id] = None
            if len(self._recent) > RECENT_LIMIT:
                self._recent.popitem(last=False)
            pending = self._in_flight.pop(task_id, None)
            if pending is not None and pending.generation == self.generation and pending.tag in self._open_tags:
                self._open_tags.discard(pending.tag)
                tags.append(pending.tag)
        if not tags or consumer is None:
            return
        heap, open_tags = self._open_heap, self._open_tags
        while heap and heap[0] not in open_tags:
            heapq.heappop(heap)
        oldest_open = heap[0] if heap else None
        below = [t for t in tags if oldest_open is None or t < oldest_open]
        if below:
            # every unsettled delivery up to max(below) is one of these: the rest are settled
            consumer.ack_through(max(below))
        for t in tags:
            if oldest_open is not None and t > oldest_open:
                consumer.ack(t)

    # --- results --------------------------------------------------------------------------------
    def _within_limit(self, task_id: str, body: bytes) -> bytes:
        """``body``, or if the broker would refuse it (closing the channel: taken for an outage,
        it would be re-sent for ever, and the rest of its batch with it) an error result
        naming the limit."""
        if len(body) <= topo.MAX_MESSAGE_SIZE:
            return body
        text = (f"MaxResultSizeExceeded: the result message of {len(body)} bytes exceeds the "
                f"broker's {topo.MAX_MESSAGE_SIZE} byte (16 MiB) max_message_size; multi-byte "
                "characters and JSON escapes count several bytes each: return less data")
        log.error("task %s: %s", task_id, text)
        return error_result(task_id, text, "MaxResultSizeExceeded", f"remote error: {text}", self.endpoint_id)

    def _publish(self, items: list[tuple[str, bytes]]) -> list[bool]:
        assert self.publisher is not None
        items = [(task_id, self._within_limit(task_id, body)) for task_id, body in items]
        exchange, key = self._results_route
        try:
            outcomes = self.publisher.publish_batch(
                [(exchange, key, body, None, int(time.time())) for _, body in items], mandatory=True,
            )
        except (ConnectionError, TimeoutError) as exc:
            log.error("could not publish %d result(s): %s", len(items), exc)
            return [False] * len(items)
        for (task_id, _), outcome in zip(items, outcomes, strict=True):
            if outcome != "ack":
                log.error("the broker did not accept the result of %s (%s)", task_id, outcome)
        return [o == "ack" for o in outcomes]

    def _handle_batch(self, items: list[tuple[str, bytes]]) -> None:
        for (task_id, body), ok in zip(items, self._publish(items), strict=True):
            if ok:
                self._confirmed.put(task_id)
                continue
            try:
                self.store.put(task_id, body)
                log.warning("result of %s kept in %s for re-sending", task_id, self.store.dir)
            except OSError as exc:
                # not stored, not acked: the task runs again after a restart
                log.error("cannot store the result of %s (%s); it will run again", task_id, exc)

    def _resend_stored(self) -> None:
        ids = self.store.task_ids()
        for start in range(0, len(ids), 100):
            chunk = [(tid, body) for tid in ids[start:start + 100] if (body := self.store.get(tid)) is not None]
            if not chunk:
                continue
            results = self._publish(chunk)
            for (task_id, _), ok in zip(chunk, results, strict=True):
                if ok:
                    self.store.delete(task_id)
                    self._confirmed.put(task_id)
            if not all(results):
                return  # still failing; try again later

    def _result_loop(self) -> None:
        last_resend = 0.0
        stopping = False
        while True:
            items: list[tuple[str, bytes]] = []
            try:
                first = self._done.get(timeout=RESEND_PERIOD / 2)
                batch = [first]
                while len(batch) < 500:
                    try:
                        batch.append(self._done.get_nowait())
                    except queue.Empty:
                        break
                stopping = any(i is None for i in batch)
                items = [i for i in batch if i is not None]
            except queue.Empty:
                pass
            if items:
                self._handle_batch(items)
            now = time.monotonic()
            if (now - last_resend >= RESEND_PERIOD or stopping) and len(self.store):
                last_resend = now
                self._resend_stored()
            if stopping:
                return

    # --- heartbeats -------------------------------------------------------------------------------
    def _queue_depth(self) -> int | None:
        try:
            assert self.publisher is not None
            return self.publisher.declare_queue(self._reg["task_queue_info"]["queue"], passive=True)
        except Exception as exc:  # status only: never fail a heartbeat for it
            log.debug("queue depth unavailable: %s", exc)
            return None

    def status(self, active: bool = True) -> dict[str, Any]:
        assert self.engine is not None
        engine = self.engine.status()
        held = len(self._in_flight)
        return {
            **engine,
            "heartbeat_period": self.config.heartbeat_period if active else 0,
            "active": active,
            "endpoint_name": self.name,
            "consuming": self.consumer is not None and not self.consumer.closed,
            "consumer_restarts": self.consumer_restarts,
            "queue_depth": self._queue_depth() if active else None,
            "prefetch": self.prefetch,
            "tasks_held": held,
            "pending_tasks": max(0, held - engine.get("outstanding_tasks", 0)),
            "unpublished_results": len(self.store),
            "tasks_received": self.received,
            "results_sent": self.completed,
            "tasks_rejected": self.rejected,
            "posix_pid": os.getpid(),
            "hostname": socket.gethostname(),
            "start_unix": self.started,
            "endpoint_version": __version__,
        }

    def _send_heartbeat(self, active: bool = True) -> bool:
        if self.publisher is None or self.endpoint_id is None or self.engine is None:
            return False
        exchange, key = self._heartbeats_route
        try:
            outcome = self.publisher.publish(
                exchange, key, pack_status_report(self.endpoint_id, self.status(active)),
                mandatory=True, timeout=5.0,
            )
        except (ConnectionError, TimeoutError) as exc:
            log.warning("heartbeat not sent: %s", exc)
            return False
        return outcome == "ack"

    def _heartbeat_loop(self) -> None:
        idle_soft = idle_hard = 0
        moved_ever = False
        last = (0, 0)
        while True:
            self._send_heartbeat()
            if self._stop.wait(self.config.heartbeat_period):
                return
            now = (self.received, self.completed)
            moved = now != last
            last = now
            moved_ever = moved_ever or moved
            idle_hard = 0 if moved else idle_hard + 1
            all_done = not self._in_flight and self._done.empty()
            idle_soft = idle_soft + 1 if (moved_ever and all_done and not moved) else 0
            soft, hard = self.config.idle_heartbeats_soft, self.config.idle_heartbeats_hard
            if soft and idle_soft >= soft:
                self.stop(reason=f"idle for {idle_soft} heartbeats after finishing its work (idle_heartbeats_soft)")
            elif hard and idle_hard >= hard:
                self.stop(reason=f"no task moved for {idle_hard} heartbeats (idle_heartbeats_hard)")

    # --- shutdown ---------------------------------------------------------------------------------
    def _shutdown(self) -> None:
        log.info("endpoint %s stopping: %s", self.name, self.stop_reason or "error")
        self._stop.set()
        engine = self.engine
        deadline = time.monotonic() + self.config.shutdown_grace
        # running tasks may finish (and their results be confirmed and acked) within the grace
        while engine is not None and engine.outstanding and time.monotonic() < deadline:
            time.sleep(0.1)
            self._ack_confirmed(self.consumer)
        if engine is not None:
            engine.shutdown()  # the rest get no result: their deliveries go back to the queue
        if self._threads:
            self._done.put(None)
        for t in self._threads:
            t.join(timeout=30)
        consumer = self.consumer
        if consumer is not None:
            self._ack_confirmed(consumer)
            try:
                consumer.close()  # unacked deliveries return to the queue now
            except Exception:  # already broken
                log.debug("closing the task consumer failed", exc_info=True)
        if self._consuming:  # a refused second instance must not report the running one offline
            self._send_heartbeat(active=False)
        if self.publisher is not None:
            self.publisher.close()
        log.info("endpoint %s stopped (%d results sent, %d unpublished kept in %s)",
                 self.name, self.completed, len(self.store), self.store.dir)


def install_signal_handlers(agent: Agent) -> None:
    signal.signal(signal.SIGTERM, lambda *_: agent.stop(reason="SIGTERM"))
    signal.signal(signal.SIGINT, lambda *_: agent.stop(reason="SIGINT"))
