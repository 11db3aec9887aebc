"""The endpoint agent: register, then wire task intake, the engine, result publishing and
heartbeats together, and shut them down in order.

Threads and who owns what:

* the **main thread** runs the task intake (:mod:`volley.endpoint.intake`): it takes
  deliveries (exclusive consumer, bounded prefetch), hands tasks to the engine, and acks a
  delivery only once that task's result is confirmed by the broker (:mod:`volley.endpoint.acks`);
* the **result thread** (:mod:`volley.endpoint.results`) publishes finished results in batches
  with publisher confirms; a result the broker does not confirm goes to ``unacked_results/``
  and is re-sent until it is;
* the **heartbeat thread** (:mod:`volley.endpoint.heartbeats`) publishes status reports
  (workers, queue depth, ...) and stops an idle endpoint when configured to.

No lost work: a delivery stays unacked while its task waits or runs (the local broker's
``consumer_timeout`` is 7 days, so day-long tasks are not reclaimed), so if this process dies
the broker hands every such task to the next run of the endpoint, which runs it again.  A task
whose result sits in ``unacked_results/`` is not run again: the stored result is re-sent.  A
lost worker yields an error Result naming the cause (after the configured retries); so does a
task that was running each time the agent died (``attempts.log``, :mod:`volley.endpoint.attempts`),
so a task that takes its endpoint down cannot do so forever.

Broker outages are waited out, however long (``$VOLLEY_GIVE_UP_AFTER`` sets a limit): the task
consumer runs in the one consume-and-reconnect loop (``volley.transport.reconnect``), results
that cannot be published wait in ``unacked_results/``, and tasks keep running meanwhile; their
redeliveries after the reconnect are matched to them, not run again.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

from volley.endpoint.acks import DeliveryBook
from volley.endpoint.attempts import AttemptLog
from volley.endpoint.cancels import CancelRecord
from volley.endpoint.config import EndpointConfig
from volley.endpoint.control import ControlListener
from volley.endpoint.engines import Engine, build_engine
from volley.endpoint.errors import AgentError, AlreadyRunning, QueueHeld
from volley.endpoint.heartbeats import Heartbeats
from volley.endpoint.intake import TaskIntake
from volley.endpoint.prefetch import AdaptivePrefetch
from volley.endpoint.results import ResultSender
from volley.endpoint.store import ResultStore
from volley.private_files import private_dir, private_file, write_private
from volley.protocol import topology as topo
from volley.protocol.batches import CAPABILITY as BATCH_CAPABILITY
from volley.protocol.control import CANCELS_FIRST
from volley.transport import Publisher, open_publisher
from volley.transport.reconnect import GaveUp, Outage, ReconnectPolicy
from volley.version import __version__

__all__ = ("Agent", "AgentError", "AlreadyRunning", "QueueHeld", "install_signal_handlers")

log = logging.getLogger(__name__)

# how long the start waits for the control queue's pending cancel notices
CONTROL_CATCH_UP_S = 30.0


class Agent:
    def __init__(self, name: str, directory: Path, config: EndpointConfig, client: Any,
                 *, transport: str | None = None) -> None:
        self.name = name
        self.dir = directory
        self.config = config
        self.client = client
        self.transport = transport
        self.store = ResultStore(directory / "unacked_results")
        self.cancels: CancelRecord | None = None  # opened under the lock: one writer
        self.book = DeliveryBook()
        self._stop = threading.Event()
        self.stop_reason = ""
        self._lock_file: Any = None
        self.endpoint_id: str | None = None
        self.engine: Engine | None = None
        self.publisher: Publisher | None = None
        self.intake: TaskIntake | None = None
        self.results: ResultSender | None = None
        self.attempts: AttemptLog | None = None
        self.heartbeats: Heartbeats | None = None
        self.control: ControlListener | None = None
        self.started = time.time()
        self._reg: dict[str, Any] = {}
        self._consuming = False  # true once the task queue was ours
        self.prefetch: AdaptivePrefetch | None = None
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
        results_route = self._route(reg["result_queue_info"], topo.RESULTS_EXCHANGE, topo.results_routing_key(eid))
        heartbeats_route = self._route(reg["heartbeat_queue_info"], topo.HEARTBEATS_EXCHANGE,
                                       topo.heartbeats_routing_key(eid))
        engine = self.engine = build_engine(
            self.config.engine_type, self.config.engine_options(), endpoint_id=eid,
            endpoint_dir=str(self.dir), run_in_sandbox=self.config.sandbox,
        )
        attempts = self.attempts = AttemptLog(self.dir / "attempts.log")
        cancels = self.cancels = CancelRecord(self.dir / "cancelled_tasks")
        engine.on_start = attempts.started
        self.prefetch = AdaptivePrefetch(engine.capacity, fixed=self.config.prefetch)
        publisher = self.publisher = self._open_publisher(reg["result_queue_info"]["connection_url"],
                                                          (results_route[0], heartbeats_route[0]))
        if publisher is None:
            return  # stopped while waiting for the broker
        # Volley's service reads several results per message; upstream's would not, and never
        # offers it
        results = self.results = ResultSender(publisher, results_route, self.store, self.book.confirmed,
                                              endpoint_id=eid,
                                              batches=reg["result_queue_info"].get(BATCH_CAPABILITY) is True)
        intake = self.intake = TaskIntake(
            self.name, eid, reg["task_queue_info"], amqp=self._amqp(), prefetch=self.prefetch,
            engine=engine, book=self.book, results=results, attempts=attempts, cancels=cancels,
            stored=self.store.has,
            allowed_functions=self.config.allowed_functions, policy=self.policy, stopped=self._stop,
            check_health=self._check_health,
        )
        self.control = ControlListener(
            self.name, eid, reg["task_queue_info"]["connection_url"], amqp=self._amqp(), policy=self.policy,
            stopped=self._stop, notices=intake.notices, record=cancels,
        )
        self.heartbeats = Heartbeats(
            publisher, heartbeats_route, eid, period=self.config.heartbeat_period,
            idle_soft=self.config.idle_heartbeats_soft, idle_hard=self.config.idle_heartbeats_hard,
            status=self.status, progress=lambda: (intake.received, self.book.completed),
            all_done=lambda: not len(self.book) and results.idle,
            stop=lambda reason: self.stop(reason=reason), stopped=self._stop,
        )
        try:
            # the queue must be ours before anything starts: a refused second instance starts
            # nothing; a broker not up yet is waited for
            first = self._wait_for_broker("task consumer", intake.open_consumer)
            if first is None:
                return  # stopped while waiting for the broker
            self._consuming = True
            engine.start()
            results.start()
            self.heartbeats.start()
            self.control.start()
            # cancel notices sent while the agent was down apply before its first task runs
            if not self.control.caught_up.wait(CONTROL_CATCH_UP_S):
                log.warning("the control queue did not hand over its cancel notices within %.0f s; "
                            "running tasks meanwhile (a task cancelled while this endpoint was down may run)",
                            CONTROL_CATCH_UP_S)
            # `volley endpoint start --detach` waits for this: registered, consuming, engine up
            write_private(self.dir / "daemon.ready", str(os.getpid()), fsync=False)
            log.info("endpoint %s (%s) consuming %s with %s, prefetch %s", self.name, self.endpoint_id,
                     reg["task_queue_info"]["queue"], engine.type_name,
                     self.prefetch.current if self.prefetch.fixed else f"adaptive (now {self.prefetch.current})")
            intake.run(first)  # until stopped; raises GaveUp past $VOLLEY_GIVE_UP_AFTER
        except GaveUp as exc:
            raise AgentError(str(exc)) from exc
        finally:
            self._shutdown()

    def stop(self, *_: Any, reason: str = "stop requested") -> None:
        if not self._stop.is_set():
            self.stop_reason = reason
        self._stop.set()

    # --- the broker -----------------------------------------------------------------------------
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

    def _open_publisher(self, url: str, exchanges: tuple[str, str]) -> Publisher | None:
        def attempt() -> Publisher:
            publisher = open_publisher(url, **self._amqp())
            try:
                # upstream's publishers passive-declare first: a missing exchange fails here, loudly
                for exchange in exchanges:
                    publisher.declare_exchange(exchange, "topic", passive=True)
            except BaseException:
                publisher.close()
                raise
            return publisher

        return self._wait_for_broker("result publisher", attempt)

    def _check_health(self) -> None:
        assert self.engine is not None
        problem = self.engine.problem()
        if problem:
            raise AgentError(f"the engine cannot run tasks: {problem}")
        for part in (self.results, self.heartbeats):
            if part is not None and not part.thread.is_alive() and not self._stop.is_set():
                raise AgentError(f"internal thread {part.thread.name} died; see the log above")

    # --- status -----------------------------------------------------------------------------------
    def _queue_depth(self) -> int | None:
        try:
            assert self.publisher is not None
            return self.publisher.declare_queue(self._reg["task_queue_info"]["queue"], passive=True)
        except Exception as exc:  # status only: never fail a heartbeat for it
            log.debug("queue depth unavailable: %s", exc)
            return None

    def status(self, active: bool = True) -> dict[str, Any]:
        assert self.engine is not None and self.intake is not None
        engine = self.engine.status()
        held = len(self.book)
        consumer = self.intake.consumer
        return {
            **engine,
            "heartbeat_period": self.config.heartbeat_period if active else 0,
            "active": active,
            CANCELS_FIRST: True,
            "endpoint_name": self.name,
            "consuming": consumer is not None and not consumer.closed,
            "consumer_restarts": self.intake.restarts,
            "queue_depth": self._queue_depth() if active else None,
            "prefetch": self.prefetch.current if self.prefetch else None,
            "tasks_held": held,
            "pending_tasks": max(0, held - engine.get("outstanding_tasks", 0)),
            "unpublished_results": len(self.store),
            "tasks_received": self.intake.received,
            "results_sent": self.book.completed,
            "tasks_rejected": self.intake.rejected,
            "posix_pid": os.getpid(),
            "hostname": socket.gethostname(),
            "start_unix": self.started,
            "endpoint_version": __version__,
        }

    # --- shutdown ---------------------------------------------------------------------------------
    def _shutdown(self) -> None:
        log.info("endpoint %s stopping: %s", self.name, self.stop_reason or "error")
        self._stop.set()
        if self.control is not None:
            self.control.stop()
        engine = self.engine
        consumer = self.intake.consumer if self.intake is not None else None
        deadline = time.monotonic() + self.config.shutdown_grace
        # running tasks may finish (and their results be confirmed and acked) within the grace
        while engine is not None and engine.outstanding and time.monotonic() < deadline:
            time.sleep(0.1)
            self.book.ack_confirmed(consumer)
        if engine is not None:
            engine.shutdown()  # the rest get no result: their deliveries go back to the queue
        if self.attempts is not None:
            self.attempts.close()  # stopped on purpose: those tasks' attempts do not count
        if self.results is not None:
            self.results.stop()
        if self.heartbeats is not None and self.heartbeats.thread.is_alive():
            self.heartbeats.thread.join(timeout=30)
        if consumer is not None:
            self.book.ack_confirmed(consumer)
            try:
                consumer.close()  # unacked deliveries return to the queue now
            except Exception:  # already broken
                log.debug("closing the task consumer failed", exc_info=True)
        if self._consuming and self.heartbeats is not None:  # a refused second instance must not report the running one offline
            self.heartbeats.send(active=False)
        if self.publisher is not None:
            self.publisher.close()
        log.info("endpoint %s stopped (%d results sent, %d unpublished kept in %s)",
                 self.name, self.book.completed, len(self.store), self.store.dir)


def install_signal_handlers(agent: Agent) -> None:
    signal.signal(signal.SIGTERM, lambda *_: agent.stop(reason="SIGTERM"))
    signal.signal(signal.SIGINT, lambda *_: agent.stop(reason="SIGINT"))
