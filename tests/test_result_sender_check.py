"""The SDK accepts results only from the service: a tenant cannot put a payload of its making
into another tenant's result queue and have the victim's client deserialize it.

In shared-credential mode (no management API) the user and every endpoint get the same broker
user, whose permissions the operator sets; when they allow publishing on the default exchange,
whoever holds those credentials (an endpoint's host, a leaked configuration) can publish a dill
payload straight into the user's SDK queue, and unpickling it runs their code in the user's
process.  The mode serves one user: with a second, the shared user could also publish a result
under the first's endpoints' routing keys, which the router would forward as the service, so a
service in shared mode does not start on a database of two users, and no second user's token is
made.  The service's result router stamps every
message it forwards with the AMQP ``user_id`` of its own broker user (RabbitMQ refuses a
``user_id`` other than the publishing connection's), the service names that user in its
``/v2/get_amqp_result_connection_url`` answer, and the watcher dead-letters, without
deserializing, any delivery that does not carry it.  Tested with a real service (uvicorn),
a real broker and a real Executor, on both transports.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from served_service import served
from service_helpers import Broker, BrokerHost, result_body, serializer, wait_for
from volley.protocol import topology as topo
from volley.protocol.messages import pack_result
from volley.service.settings import ServiceSettings, SettingsError
from volley.transport.pika_transport import connection_parameters

pytest_plugins = ["service_fixtures"]

TRANSPORTS = ["native", "python"]


class Planted:
    """Unpickling this runs code of the sender's choosing: here, it writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def _identity(x: Any) -> Any:
    return x


def shared_url(broker: Broker, user: str, password: str) -> str:
    return broker.admin_url.replace(
        f"{broker.info.admin_user}:{broker.info.admin_password}@", f"{user}:{password}@", 1)


@pytest.fixture()
def shared_user(broker_host: BrokerHost) -> Iterator[tuple[Broker, str, str]]:
    """A vhost with one broker user for every tenant, as an operator of shared-credential mode
    sets it up: it may publish and read anywhere (endpoints publish results and heartbeats,
    SDKs read their queues) and configure nothing."""
    broker = broker_host.new_vhost()
    name, password = f"tenants-{secrets.token_hex(4)}", secrets.token_urlsafe(16)
    broker_host.api.put_user(name, password)
    broker_host.api.set_permissions(broker.vhost, name, configure="^$", write=".*", read=".*")
    try:
        yield broker, name, password
    finally:
        broker_host.api.delete_user(name)


def publish_as(url: str, ca_file: str, queue: str, body: bytes, *, user_id: str | None) -> None:
    """Publish ``body`` to ``queue`` on the default exchange, with confirms."""
    conn = pika.BlockingConnection(connection_parameters(url, ca_file=ca_file))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("", queue, body, mandatory=True,
                         properties=pika.BasicProperties(delivery_mode=2, user_id=user_id))
    finally:
        if conn.is_open:
            conn.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_result_forged_into_another_tenants_queue_is_refused_unread(
    shared_user: tuple[Broker, str, str], tmp_path: Path, transport: str
) -> None:
    from volley import Client, Executor
    from volley.service.auth import create_token

    broker, tenants_user, tenants_password = shared_user
    info = broker.info
    tenants_url = shared_url(broker, tenants_user, tenants_password)
    settings = ServiceSettings(database_url=f"sqlite:///{tmp_path / 'service.db'}", broker_url=broker.admin_url,
                               public_broker_url=tenants_url, ca_file=info.ca_file, transport=transport)
    marker = tmp_path / "planted-code-ran"
    with served(settings) as (url, state):
        with state.sessions() as s:
            alice_id, alice_token = create_token(s, "alice")
        alice = Client(service_url=url, token=alice_token, ca_file=info.ca_file)
        reg = alice.register_endpoint("alice-ep")
        # shared-credential mode: whoever holds an endpoint's credentials (a config file on a
        # shared cluster) holds the very credentials the client reads its results with
        assert reg["result_queue_info"]["connection_url"] == alice.get_result_amqp_url()["connection_url"] == tenants_url
        with Executor(endpoint_id=reg["endpoint_id"], client=alice, transport=transport) as ex:
            fut = ex.submit(_identity, 5)
            task_id = wait_for(lambda: fut.task_id, what="the task id")
            queue = topo.sdk_queue_prefix(alice_id) + str(ex.task_group_id)
            forged = pack_result(task_id, serializer.serialize(Planted(marker)))
            publish_as(tenants_url, info.ca_file, queue, forged, user_id=None)
            publish_as(tenants_url, info.ca_file, queue, forged, user_id=tenants_user)
            # claiming to be the service is refused by the broker itself
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
                publish_as(tenants_url, info.ca_file, queue, forged, user_id=info.admin_user)
            assert refused.value.reply_code == 406 and "user_id" in refused.value.reply_text

            wait_for(lambda: broker.queue_depth(topo.DEAD_LETTER_QUEUE) >= 2 or fut.done(),
                     what="the forged results to be dead-lettered")
            assert not marker.exists(), "the victim's client ran code from a forged result"
            assert not fut.done(), f"a forged result resolved the future: {fut}"

            # the genuine result, from the endpoint through the router, still arrives
            kw = reg["result_queue_info"]["queue_publish_kwargs"]
            broker.publish(kw["exchange"], kw["routing_key"], result_body(task_id, 5),
                           url=reg["result_queue_info"]["connection_url"])
            assert fut.result(timeout=60) == 5
        dead = broker.drain(topo.DEAD_LETTER_QUEUE)
        assert [body for _m, _p, body in dead] == [forged, forged]
        assert not marker.exists()
        # nothing more for the group: the genuine result came once and was acked
        deadline = time.monotonic() + 5
        while broker.queue_exists(queue) and broker.queue_depth(queue) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not broker.queue_exists(queue) or broker.queue_depth(queue) == 0


def test_the_service_names_the_broker_user_its_results_come_from(
    shared_user: tuple[Broker, str, str], tmp_path: Path
) -> None:
    from volley import Client
    from volley.service.auth import create_token

    broker, tenants_user, tenants_password = shared_user
    settings = ServiceSettings(database_url=f"sqlite:///{tmp_path / 'service.db'}", broker_url=broker.admin_url,
                               public_broker_url=shared_url(broker, tenants_user, tenants_password),
                               ca_file=broker.info.ca_file)
    with served(settings) as (url, state):
        with state.sessions() as s:
            _uid, token = create_token(s, "alice")
        answer = Client(service_url=url, token=token).get_result_amqp_url()
    assert answer["volley_result_sender"] == broker.info.admin_user
    assert tenants_user in answer["connection_url"]


@pytest.mark.parametrize("public", ["same user", "no user"])
def test_shared_mode_refuses_to_hand_tenants_the_services_own_broker_user(public: str) -> None:
    """Were the tenants' user the service's own, a forged result could carry the service's
    ``user_id`` and the broker would let it through."""
    from volley.service.credentials import BrokerCredentials

    own = "amqps://svc:secret@broker.example:5671/%2F"
    if public == "same user":
        settings = ServiceSettings(broker_url=own, public_broker_url="amqps://svc:other@broker.example:5671/%2F")
    else:  # both default to guest
        settings = ServiceSettings(broker_url="amqps://broker.example:5671/%2F",
                                   public_broker_url="amqps://broker.example:5671/%2F")
    with pytest.raises(SettingsError, match=r"public_broker_url .*user .*other than .*broker_url"):
        BrokerCredentials.check(settings)


def _volley(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))


def _answers(port: int) -> bool:
    import requests

    try:
        return requests.get(f"http://127.0.0.1:{port}/v2/version", timeout=2).ok
    except requests.ConnectionError:
        return False


def _user_names(database_url: str) -> list[str]:
    from sqlalchemy import select

    from volley.service.db import database_session
    from volley.service.models import User

    with database_session(database_url) as s:
        return sorted(s.scalars(select(User.name)))


def test_shared_mode_refuses_to_start_on_a_database_of_two_users(
    shared_user: tuple[Broker, str, str], fresh_db: str, tmp_path: Path
) -> None:
    """Every tenant of shared-credential mode logs in as one broker user, which may publish a
    result under any endpoint's routing key for the router to forward as the service: so the
    mode serves one user, and a service asked to serve two in it does not start."""
    import warnings

    with warnings.catch_warnings():
        # starlette asks for httpx2 instead of httpx; the TestClient works with either
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from volley.local.ports import free_port
    from volley.service.app import create_app
    from volley.service.auth import issue_token

    broker, tenants_user, tenants_password = shared_user
    database_url = fresh_db
    port = free_port()
    issue_token(database_url, "alice")
    issue_token(database_url, "bob")
    config = tmp_path / "service.json"
    config.write_text(json.dumps({
        "database_url": database_url, "broker_url": broker.admin_url, "ca_file": broker.info.ca_file,
        "public_broker_url": shared_url(broker, tenants_user, tenants_password), "port": port,
    }))
    proc = subprocess.Popen([sys.executable, "-m", "volley.service", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    try:
        wait_for(lambda: proc.poll() is not None or _answers(port), what="the service to exit or answer")
    finally:
        if proc.poll() is None:
            proc.kill()
        _out, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 2, f"the service started in shared mode with two users:\n{stderr}"
    assert "Traceback" not in stderr, stderr
    assert "one user" in stderr and "'alice'" in stderr and "'bob'" in stderr, stderr
    assert "broker_management_url" in stderr, stderr

    settings = ServiceSettings(database_url=database_url, broker_url=broker.admin_url, ca_file=broker.info.ca_file,
                               public_broker_url=shared_url(broker, tenants_user, tenants_password))
    with pytest.raises(SettingsError, match=r"one user.*broker_management_url"):
        with TestClient(create_app(settings)):  # an app embedded by other means refuses too
            pass
    assert _user_names(database_url) == ["alice", "bob"]


def test_shared_mode_refuses_a_token_for_a_second_user_and_keeps_serving_the_first(
    shared_user: tuple[Broker, str, str], fresh_db: str, tmp_path: Path
) -> None:
    from volley import Client
    from volley.service.auth import create_token

    broker, tenants_user, tenants_password = shared_user
    database_url = fresh_db
    settings = ServiceSettings(database_url=database_url, broker_url=broker.admin_url, ca_file=broker.info.ca_file,
                               public_broker_url=shared_url(broker, tenants_user, tenants_password))
    with served(settings) as (url, state):
        first = _volley("volley.cli", "token", "create", "--user", "alice", "--database-url", database_url)
        assert first.returncode == 0, first.stderr
        again = _volley("volley.cli", "token", "create", "--user", "alice", "--database-url", database_url)
        assert again.returncode == 0, again.stderr

        second = _volley("volley.cli", "token", "create", "--user", "bob", "--database-url", database_url)
        assert second.returncode != 0 and "Traceback" not in second.stderr, second.stderr
        assert "one user" in second.stderr and "'alice'" in second.stderr, second.stderr
        assert "broker_management_url" in second.stderr, second.stderr
        with state.sessions() as s:
            with pytest.raises(SettingsError, match=r"one user.*broker_management_url"):
                create_token(s, "carol")
        assert _user_names(database_url) == ["alice"]

        # the one user goes on as before, with either of its tokens
        for token in (first.stdout.strip(), again.stdout.strip()):
            client = Client(service_url=url, token=token, ca_file=broker.info.ca_file)
            assert tenants_user in client.get_result_amqp_url()["connection_url"]


def test_two_users_asked_for_at_once_in_shared_mode_make_one(pg_databases: Any) -> None:
    """Two `volley token create` for two new users at once, on a database whose service runs
    in shared-credential mode: they wait for each other (the broker_mode row's lock), so one
    user is made and the other is refused naming the first, never both.  PostgreSQL, whose
    transactions run side by side (SQLite's writers queue on the database's write lock)."""
    from sqlalchemy import text, update

    from volley.service.credentials import record_broker_mode
    from volley.service.db import database_session, make_engine
    from volley.service.models import BrokerMode

    database_url = pg_databases.create()
    with database_session(database_url) as s:
        record_broker_mode(s, ServiceSettings(broker_url="amqps://svc:pw@broker.example:5671/%2F",
                                              public_broker_url="amqps://tenants:pw@broker.example:5671/%2F"))
    engine = make_engine(database_url)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    procs: list[subprocess.Popen[str]] = []
    try:
        with engine.connect() as conn:
            # a service recording its mode holds this lock: both creations must queue behind it
            conn.execute(update(BrokerMode).where(BrokerMode.id == 1).values(recorded_at=time.time()))
            for name in ("bob", "carol"):
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "volley.cli", "token", "create", "--user", name,
                     "--database-url", database_url],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
            with engine.connect() as watcher:
                def both_wait() -> bool:
                    assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
                    waiting = watcher.scalar(text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock'"))
                    watcher.rollback()
                    return waiting == 2
                wait_for(both_wait, what="both token creations to wait for the broker_mode lock")
            conn.rollback()
        outcomes = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        engine.dispose()
    codes = sorted(p.returncode for p in procs)
    assert codes[0] == 0 and codes[1] != 0, outcomes
    made = _user_names(database_url)
    assert len(made) == 1, made
    refused = next(err for (_out, err), p in zip(outcomes, procs, strict=True) if p.returncode)
    assert "one user" in refused and repr(made[0]) in refused and "Traceback" not in refused, refused
