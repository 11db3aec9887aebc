"""Helpers of the web-service tests (tests/test_service_*.py; fixtures: service_fixtures.py).

Each service under test gets a vhost of its own on the session's private RabbitMQ node, so its
result router never sees the local stack's messages.  Endpoints are played by the tests
themselves, over AMQPS with the credentials the service hands out, which is exactly what the
access-control tests need.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pika
import sqlalchemy as sa

from volley.local.broker import BrokerInfo
from volley.protocol import topology as topo
from volley.protocol.messages import pack_result, pack_status_report
from volley.serialize import ComputeSerializer
from volley.service.broker_admin import ManagementApi
from volley.transport.pika_transport import connection_parameters

PG_SERVER_URL = os.environ.get("VOLLEY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
BACKENDS = ["sqlite", "postgresql"]
serializer = ComputeSerializer()


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll a remote state until ``predicate`` returns something truthy (or fail at the deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


# --- broker -----------------------------------------------------------------------------------------
def broker_info(stack: dict[str, Any]) -> BrokerInfo:
    return BrokerInfo(**json.loads((Path(stack["state_dir"]) / "broker" / "broker.json").read_text()))


def management(info: BrokerInfo) -> ManagementApi:
    return ManagementApi(f"https://localhost:{info.management_port}",
                         default_credentials=(info.admin_user, info.admin_password), ca_file=info.ca_file)


@dataclass
class Broker:
    info: BrokerInfo
    vhost: str

    @property
    def admin_url(self) -> str:
        return self.info.url().rsplit("/", 1)[0] + "/" + quote(self.vhost, safe="")

    def connect(self, url: str | None = None) -> pika.BlockingConnection:
        return pika.BlockingConnection(connection_parameters(url or self.admin_url, ca_file=self.info.ca_file))

    def queue_depth(self, queue: str) -> int:
        conn = self.connect()
        try:
            return int(conn.channel().queue_declare(queue, passive=True).method.message_count)
        finally:
            conn.close()

    def queue_exists(self, queue: str) -> bool:
        conn = self.connect()
        try:
            conn.channel().queue_declare(queue, passive=True)
            return True
        except pika.exceptions.ChannelClosedByBroker as exc:
            assert exc.reply_code == 404, exc
            return False
        finally:
            if conn.is_open:
                conn.close()

    def drain(self, queue: str, url: str | None = None) -> list[tuple[Any, Any, bytes]]:
        """Take (ack) every message now in ``queue``: (method, properties, body) each."""
        conn = self.connect(url)
        try:
            ch = conn.channel()
            out = []
            while True:
                method, props, body = ch.basic_get(queue, auto_ack=True)
                if method is None:
                    return out
                out.append((method, props, body))
        finally:
            conn.close()

    def publish(self, exchange: str, routing_key: str, body: bytes, url: str | None = None,
                headers: dict[str, Any] | None = None) -> None:
        """Publish with confirms (as an endpoint does); raises on refusal."""
        conn = self.connect(url)
        try:
            ch = conn.channel()
            ch.confirm_delivery()
            ch.basic_publish(exchange, routing_key, body, mandatory=True,
                             properties=pika.BasicProperties(delivery_mode=2, headers=headers))
        finally:
            if conn.is_open:
                conn.close()


class BrokerHost:
    """The session's private node; each service under test gets a vhost of its own."""

    def __init__(self, info: BrokerInfo) -> None:
        self.info = info
        self.api = management(info)
        self.vhosts: list[str] = []

    def new_vhost(self) -> Broker:
        vhost = f"volley-test-{secrets.token_hex(4)}"
        self.api.put_vhost(vhost)
        self.vhosts.append(vhost)
        self.api.set_permissions(vhost, self.info.admin_user, configure=".*", write=".*", read=".*")
        return Broker(self.info, vhost)

    def close(self) -> None:
        for vhost in self.vhosts:
            self.api.delete_vhost(vhost)


# --- databases --------------------------------------------------------------------------------------
class PgDatabases:
    """Databases made for this session on the PostgreSQL server, all dropped at its end."""

    def __init__(self, server_url: str) -> None:
        self.server = sa.create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        self.base = server_url.rsplit("/", 1)[0]
        self.names: list[str] = []

    def create(self) -> str:
        name = f"volley_test_{os.getpid()}_{secrets.token_hex(4)}"
        with self.server.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        self.names.append(name)
        return f"{self.base}/{name}"

    def drop_all(self) -> None:
        with self.server.connect() as conn:
            for name in self.names:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.server.dispose()


# --- the service --------------------------------------------------------------------------------
@dataclass
class User:
    id: str
    name: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Service:
    backend: str
    client: Any  # fastapi.testclient.TestClient
    broker: Broker
    database_url: str

    @property
    def state(self) -> Any:
        return self.client.app.state.volley

    def new_user(self) -> User:
        from volley.service.auth import create_token

        name = f"user-{secrets.token_hex(4)}"
        with self.state.sessions() as s:
            uid, token = create_token(s, name)
        return User(uid, name, token)

    # --- thin REST helpers (assert success) ------------------------------------------------
    def register_function(self, user: User, fn: Any = None, **extra: Any) -> str:
        body = {"function_name": "f", "function_code": serializer.pack_buffers([serializer.serialize(fn or _identity)]),
                "meta": {"python_version": "3", "sdk_version": "0"}, **extra}
        r = self.client.post("/v3/functions", json=body, headers=user.headers)
        assert r.status_code == 200, r.text
        return str(r.json()["function_uuid"])

    def register_endpoint(self, user: User, **body: Any) -> dict[str, Any]:
        r = self.client.post("/v3/endpoints", json={"endpoint_name": "ep", **body}, headers=user.headers)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def submit(self, user: User, endpoint_id: str, function_id: str, *args_list: tuple[Any, ...],
               create_queue: bool = True, task_group_id: str | None = None, **extra: Any) -> dict[str, Any]:
        payloads = [task_payload(*a) for a in (args_list or [(1,)])]
        body: dict[str, Any] = {"create_queue": create_queue, "tasks": {function_id: payloads}, **extra}
        if task_group_id:
            body["task_group_id"] = task_group_id
        r = self.client.post(f"/v3/endpoints/{endpoint_id}/submit", json=body, headers=user.headers)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def task(self, user: User, task_id: str) -> dict[str, Any]:
        r = self.client.get(f"/v2/tasks/{task_id}", headers=user.headers)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def count(self, model: Any, **where: Any) -> int:
        with self.state.sessions() as s:
            q = sa.select(sa.func.count()).select_from(model)
            for k, v in where.items():
                q = q.where(getattr(model, k) == v)
            return int(s.scalar(q) or 0)

    def result_url(self, user: User) -> dict[str, Any]:
        r = self.client.get("/v2/get_amqp_result_connection_url", headers=user.headers)
        assert r.status_code == 200, r.text
        return dict(r.json())


def _identity(x: Any) -> Any:
    return x


def task_payload(*args: Any, **kwargs: Any) -> str:
    return serializer.pack_buffers([serializer.serialize(args), serializer.serialize(kwargs)])


def result_body(task_id: str, value: Any = None, *, error: str | None = None) -> bytes:
    if error is not None:
        return pack_result(task_id, error, error_code="RemoteExecutionError", error_message=error,
                           details={"endpoint_id": "x"})
    return pack_result(task_id, serializer.serialize(value), details={"python_version": "3.11"})


def heartbeat_body(endpoint_id: str, **state: Any) -> bytes:
    return pack_status_report(endpoint_id, {"heartbeat_period": 5, "active": True, **state})


def endpoint_publish_result(svc: Service, reg: dict[str, Any], body: bytes) -> None:
    """Publish a result exactly as the endpoint would, with its own credentials."""
    kw = reg["result_queue_info"]["queue_publish_kwargs"]
    svc.broker.publish(kw["exchange"], kw["routing_key"], body, url=reg["result_queue_info"]["connection_url"])


def endpoint_publish_batch(svc: Service, reg: dict[str, Any], bodies: list[bytes]) -> bytes:
    """Publish packed results as one batch message, as a Volley endpoint does; the body sent."""
    from volley.protocol.batches import BATCH_HEADER, pack_batch

    kw = reg["result_queue_info"]["queue_publish_kwargs"]
    body = pack_batch(bodies)
    svc.broker.publish(kw["exchange"], kw["routing_key"], body, url=reg["result_queue_info"]["connection_url"],
                       headers={BATCH_HEADER: len(bodies)})
    return body


def tenant_with_tasks(svc: Service, n: int, **submit: Any) -> tuple[User, dict[str, Any], dict[str, Any], list[str]]:
    """A new user with a function and an endpoint, and ``n`` tasks submitted to it and taken off
    its task queue (as if its endpoint had received them): (user, registration, submit answer,
    task ids)."""
    user = svc.new_user()
    fid = svc.register_function(user)
    reg = svc.register_endpoint(user)
    out = svc.submit(user, reg["endpoint_id"], fid, *[(i,) for i in range(n)], **submit)
    svc.broker.drain(f"{reg['endpoint_id']}.tasks")
    return user, reg, out, out["tasks"][fid]


def sdk_queue(user: User, task_group_id: str) -> str:
    return topo.sdk_queue_prefix(user.id) + task_group_id


def _service_settings(broker: Broker, database_url: str, **overrides: Any) -> Any:
    from volley.service.settings import ServiceSettings

    info = broker.info
    return ServiceSettings(
        database_url=database_url,
        broker_url=broker.admin_url,
        broker_management_url=f"https://localhost:{info.management_port}",
        secret_key=secrets.token_urlsafe(16),
        ca_file=info.ca_file,
        **overrides,
    )


def start_service(broker: Broker, database_url: str, backend: str, **overrides: Any) -> Iterator[Service]:
    import warnings

    with warnings.catch_warnings():
        # starlette asks for httpx2 instead of httpx; the TestClient works with either
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from volley.service.app import create_app

    app = create_app(_service_settings(broker, database_url, **overrides))
    with TestClient(app, raise_server_exceptions=False) as client:
        # the consumers must be attached before a test publishes, or its messages would wait
        loops = [t for t in app.state.volley_threads if hasattr(t, "ready")]
        wait_for(lambda: all(t.ready.is_set() for t in loops), what="the service's consumers")
        yield Service(backend, client, broker, database_url)


def new_uuid() -> str:
    return str(uuid.uuid4())


# --- outages and broker state loss (tests/test_service_outbox.py, test_service_restore.py) -------
class TcpRelay:
    """A TCP relay in front of the broker's AMQPS port.  Stopping it is a broker outage for
    whoever connects through it -- open connections drop, new ones are refused -- while the
    broker itself, and everyone connected to it directly, carries on with its state intact."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0  # chosen at the first start, kept across restarts
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            sockets, self._open = self._open, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def url(self, direct_url: str) -> str:
        """``direct_url`` (to the broker's AMQPS port) as a URL through this relay."""
        return direct_url.replace(f":{self.target_port}/", f":{self.port}/", 1)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _addr = listener.accept()
            except OSError:  # closed by stop()
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # stopped meanwhile
                    client.close()
                    upstream.close()
                    return
                self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)


def relayed_settings(broker: Broker, database_url: str, relay: TcpRelay, **overrides: Any) -> Any:
    """Service settings whose own AMQP goes through ``relay``; the management API and the URLs
    handed to clients reach the broker directly."""
    import dataclasses

    settings = _service_settings(broker, database_url, **overrides)
    return dataclasses.replace(settings, broker_url=relay.url(broker.admin_url),
                               public_broker_url=broker.admin_url)


def run_service(settings: Any, broker: Broker, backend: str) -> Iterator[Service]:
    """The service built from ``settings`` (compare :func:`start_service`)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from volley.service.app import create_app

    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        loops = [t for t in app.state.volley_threads if hasattr(t, "ready")]
        wait_for(lambda: all(t.ready.is_set() for t in loops), what="the service's consumers")
        yield Service(backend, client, broker, settings.database_url)


def backend_of(database_url: str) -> str:
    return "sqlite" if database_url.startswith("sqlite") else "postgresql"


def delete_queue(info: BrokerInfo, vhost: str, queue: str) -> None:
    """Delete a queue, with whatever it holds, through the management API."""
    api = management(info)
    r = api.session.delete(f"{api.base}/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}",
                           auth=api.auth, verify=api.verify, timeout=api.timeout)
    assert r.status_code in (204, 404), r.text


def connections_in(info: BrokerInfo, vhost: str) -> list[str]:
    api = management(info)
    # the node collects no statistics, and only this listing works without them
    r = api.session.get(f"{api.base}/connections?columns=name,vhost",
                        auth=api.auth, verify=api.verify, timeout=api.timeout)
    assert r.status_code == 200, r.text
    return [str(c["name"]) for c in r.json() if c.get("vhost") == vhost]


def close_connections(info: BrokerInfo, vhost: str) -> int:
    """Close every client connection to ``vhost`` from the broker's side, as a broker restart
    does (its state stays); return how many there were."""
    api = management(info)
    names = connections_in(info, vhost)
    for name in names:
        r = api.session.delete(f"{api.base}/connections/{quote(name, safe='')}",
                               auth=api.auth, verify=api.verify, timeout=api.timeout)
        assert r.status_code in (204, 404), r.text
    return len(names)
