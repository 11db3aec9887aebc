"""The endpoint agent's main loop.

Threads: the main thread consumes the task queue (exclusive consumer, bounded prefetch) and acks;
a result thread publishes finished results with confirms as soon as they exist; a heartbeat
thread reports status.  A task's delivery is acked only after its result is confirmed by the
broker, so a crash at any point leaves the task queued (it runs again) rather than lost.  The
broker's ``consumer_timeout`` is raised for the local stack so long tasks are not reclaimed.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import queue
import signal
import socket
import threading
from pathlib import Path
from typing import Any

from volley.endpoint.config import EndpointConfig
from volley.endpoint.engines import Engine, build_engine
from volley.protocol import topology as topo
from volley.protocol.messages import pack_result, pack_status_report
from volley.transport import Consumer, Publisher, open_consumer, open_publisher
from volley.version import __version__

log = logging.getLogger(__name__)


class AlreadyRunning(RuntimeError):
    pass


class Agent:
    def __init__(self, name: str, directory: Path, config: EndpointConfig, client: Any,
                 *, transport: str | None = None) -> None:
        self.name = name
        self.dir = directory
        self.config = config
        self.client = client
        self.transport = transport
        self._stop = threading.Event()
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        self._acks: queue.SimpleQueue = queue.SimpleQueue()
        self._lock_file: Any = None
        self.endpoint_id: str | None = None
        self.engine: Engine | None = None
        self.consumer: Consumer | None = None
        self.publisher: Publisher | None = None
        self.received = 0
        self.completed = 0

    # --- start-up -------------------------------------------------------------------------------
    def _take_lock(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        f = open(self.dir / "daemon.lock", "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            pid = (self.dir / "daemon.pid").read_text().strip() if (self.dir / "daemon.pid").exists() else "?"
            raise AlreadyRunning(
                f"endpoint {self.name!r} is already running (pid {pid}); stop it first "
                f"(`volley endpoint stop {self.name}`)"
            ) from None
        self._lock_file = f
        (self.dir / "daemon.pid").write_text(str(os.getpid()))

    def _register(self) -> dict[str, Any]:
        id_file = self.dir / "endpoint.json"
        known = json.loads(id_file.read_text())["endpoint_id"] if id_file.exists() else None
        reg = self.client.register_endpoint(
            self.name,
            endpoint_id=known,
            display_name=self.config.display_name,
            metadata={
                "endpoint_version": __version__,
                "hostname": socket.gethostname(),
                "local_user": os.environ.get("USER", ""),
                "engine": self.config.engine_type,
            },
        )
        self.endpoint_id = reg["endpoint_id"]
        if known and known != self.endpoint_id:
            raise RuntimeError(f"service assigned endpoint id {self.endpoint_id}, expected {known}")
        id_file.write_text(json.dumps({"endpoint_id": self.endpoint_id}))
        return reg

    def run(self) -> None:
        self._take_lock()
        reg = self._register()
        url = reg["task_queue_info"]["connection_url"]
        ca_file = getattr(self.client, "ca_file", None)
        port = self.config.amqp_port
        workers = self.config.engine_kwargs().get("max_workers") or os.cpu_count() or 1
        prefetch = self.config.prefetch or 2 * int(workers) + 8
        self.engine = build_engine(
            self.config.engine_type,
            endpoint_id=self.endpoint_id,
            run_dir=str(self.dir / "tasks_working_dir"),
            run_in_sandbox=self.config.sandbox,
            **self.config.engine_kwargs(),
        )
        self.engine.start()
        self.publisher = open_publisher(url, transport=self.transport, ca_file=ca_file, port=port)
        self.consumer = open_consumer(
            url, reg["task_queue_info"]["queue"], transport=self.transport, ca_file=ca_file,
            port=port, prefetch=prefetch, exclusive=True,
        )
        threads = [
            threading.Thread(target=self._result_loop, name="volley-results", daemon=True),
            threading.Thread(target=self._heartbeat_loop, name="volley-heartbeat", daemon=True),
        ]
        for t in threads:
            t.start()
        log.info("endpoint %s (%s) consuming %s with %s", self.name, self.endpoint_id,
                 reg["task_queue_info"]["queue"], self.config.engine_type)
        try:
            self._task_loop()
        finally:
            self._stop.set()
            self._done.put(None)
            for t in threads:
                t.join(timeout=10)
            self._send_heartbeat(active=False)
            self.consumer.close()
            self.engine.shutdown()
            self.publisher.close()

    def stop(self, *_: Any) -> None:
        self._stop.set()

    # --- tasks ----------------------------------------------------------------------------------
    def _task_loop(self) -> None:
        assert self.consumer is not None
        while not self._stop.is_set():
            batch = self.consumer.next_batch(256, timeout=0.2)
            for d in batch:
                self._dispatch(d)
            self._ack_finished()

    def _ack_finished(self) -> None:
        assert self.consumer is not None
        while True:
            try:
                tag = self._acks.get_nowait()
            except queue.Empty:
                return
            self.consumer.ack(tag)

    def _dispatch(self, d: Any) -> None:
        assert self.consumer is not None and self.engine is not None
        headers = d.headers or {}
        m = d.message
        task_id = headers.get("task_uuid")
        function_id = headers.get("function_uuid")
        if m is None or m.kind != "task" or not task_id or not function_id:
            why = d.invalid or "missing function_uuid/task_uuid header or not a task message"
            log.error("dead-lettering unusable task message: %s", why)
            self.consumer.nack(d.tag, requeue=False)
            return
        self.received += 1
        allowed = self.config.allowed_functions
        if allowed is not None and function_id not in allowed:
            self._done.put((d.tag, pack_result(
                m.task_id, f"Function {function_id} not permitted on endpoint {self.endpoint_id}",
                error_code="FUNCTION_NOT_ALLOWED",
                error_message=f"Function {function_id} not permitted on endpoint {self.endpoint_id}",
                details={"fid": function_id, "eid": self.endpoint_id},
            )))
            return
        try:
            spec_raw = headers.get("resource_specification")
            spec = json.loads(spec_raw) if spec_raw else {}
            spec = spec or {}
        except (TypeError, ValueError):
            spec = {"invalid": spec_raw}
        serializers = headers.get("result_serializers") or None
        fut = self.engine.submit(m.task_id, d.body, spec, serializers)
        tag, tid = d.tag, m.task_id

        def finished(f: Any) -> None:
            try:
                body = f.result()
            except Exception as exc:  # the engine itself failed, not the task
                body = pack_result(tid, f"task failed in the engine: {exc!r}",
                                   error_code="UNKNOWN_TASK_FAILURE",
                                   error_message=f"remote error: {exc!r}")
            self._done.put((tag, body))

        fut.add_done_callback(finished)

    def _result_loop(self) -> None:
        assert self.publisher is not None
        rk = topo.results_routing_key(self.endpoint_id or "")
        while True:
            item = self._done.get()
            items = [item]
            while True:
                try:
                    items.append(self._done.get_nowait())
                except queue.Empty:
                    break
            stop = any(i is None for i in items)
            items = [i for i in items if i is not None]
            if items:
                try:
                    outcomes = self.publisher.publish_batch(
                        [(topo.RESULTS_EXCHANGE, rk, body, None, None) for _, body in items],
                        mandatory=True,
                    )
                except (ConnectionError, TimeoutError) as exc:
                    # unconfirmed: the deliveries stay unacked and the tasks run again
                    log.error("could not publish %d results (%s); their tasks will be redelivered", len(items), exc)
                    outcomes = ["error"] * len(items)
                for (tag, _), outcome in zip(items, outcomes, strict=True):
                    if outcome == "ack":
                        self.completed += 1
                        self._acks.put(tag)
                    else:
                        log.error("result not accepted by the broker (%s); task will be redelivered", outcome)
            if stop:
                return

    # --- heartbeats -------------------------------------------------------------------------------
    def _send_heartbeat(self, active: bool = True) -> None:
        if self.publisher is None or self.endpoint_id is None or self.engine is None:
            return
        state = {
            **self.engine.status(),
            "heartbeat_period": self.config.heartbeat_period if active else 0,
            "active": active,
            "endpoint_name": self.name,
            "tasks_received": self.received,
            "results_sent": self.completed,
            "posix_pid": os.getpid(),
        }
        try:
            self.publisher.publish(
                topo.HEARTBEATS_EXCHANGE, topo.heartbeats_routing_key(self.endpoint_id),
                pack_status_report(self.endpoint_id, state), mandatory=True, timeout=5.0,
            )
        except (ConnectionError, TimeoutError) as exc:
            log.warning("heartbeat not sent: %s", exc)

    def _heartbeat_loop(self) -> None:
        while True:
            self._send_heartbeat()
            if self._stop.wait(self.config.heartbeat_period):
                return


def install_signal_handlers(agent: Agent) -> None:
    signal.signal(signal.SIGTERM, agent.stop)
    signal.signal(signal.SIGINT, agent.stop)

