"""The SDK accepts results only from the service: a tenant cannot put a payload of its making
into another tenant's result queue and have the victim's client deserialize it.

In shared-credential mode (no management API) every tenant and endpoint gets the same broker
user, whose permissions the operator sets; when they allow publishing on the default exchange,
a tenant can publish a dill payload straight into another tenant's SDK queue, and unpickling it
runs the tenant's code in the victim's process.  The service's result router stamps every
message it forwards with the AMQP ``user_id`` of its own broker user (RabbitMQ refuses a
``user_id`` other than the publishing connection's), the service names that user in its
``/v2/get_amqp_result_connection_url`` answer, and the watcher dead-letters, without
deserializing, any delivery that does not carry it.  Tested with a real service (uvicorn),
a real broker and a real Executor, on both transports.
"""

from __future__ import annotations

import secrets
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
            _mallory_id, mallory_token = create_token(s, "mallory")
        alice = Client(service_url=url, token=alice_token, ca_file=info.ca_file)
        mallory = Client(service_url=url, token=mallory_token, ca_file=info.ca_file)
        # shared-credential mode: the attacker holds the very credentials the victim uses
        assert mallory.get_result_amqp_url()["connection_url"] == alice.get_result_amqp_url()["connection_url"]
        reg = alice.register_endpoint("alice-ep")
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
