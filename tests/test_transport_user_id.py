"""Both transports carry the AMQP ``user_id`` property (which the result watcher checks), and
settle a batch the way the watcher does: some deliveries nacked, then one multiple-ack through
the last.  Against the session's broker, in a vhost of its own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from service_helpers import Broker, BrokerHost
from volley.protocol.messages import pack_result
from volley.transport import open_consumer, open_publisher
from volley.transport.base import PRECONDITION_FAILED, channel_code

pytest_plugins = ["service_fixtures"]

TRANSPORTS = ["native", "python"]


@pytest.fixture(scope="module")
def vhost(broker_host: BrokerHost) -> Broker:
    return broker_host.new_vhost()


@pytest.fixture()
def publisher(vhost: Broker, request: pytest.FixtureRequest) -> Iterator[Any]:
    pub = open_publisher(vhost.admin_url, transport=request.node.callspec.params["transport"],
                         ca_file=vhost.info.ca_file)
    try:
        yield pub
    finally:
        pub.close()


def _body(i: int) -> bytes:
    return pack_result(str(uuid.uuid4()), f"00\npayload-{i}\n")


def _drain(consumer: Any, want: int) -> list[Any]:
    got: list[Any] = []
    for _ in range(200):
        if len(got) >= want:
            break
        got.extend(consumer.next_batch(1024, timeout=0.2))
    return got


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_user_id_is_sent_checked_by_the_broker_and_delivered(vhost: Broker, publisher: Any, transport: str) -> None:
    own = vhost.info.admin_user
    q = f"uid-{uuid.uuid4().hex[:10]}"
    publisher.declare_queue(q)
    assert publisher.publish("", q, _body(0), user_id=own) == "ack"
    assert publisher.publish_batch([("", q, _body(1), None, None), ("", q, _body(2), None, None)],
                                   user_id=own) == ["ack", "ack"]
    assert publisher.publish("", q, _body(3)) == "ack"
    # a user_id other than the connection's own is refused by the broker, and the publisher
    # goes on working
    with pytest.raises(ConnectionError) as refused:
        publisher.publish("", q, _body(4), user_id="someone-else")
    assert channel_code(refused.value) == PRECONDITION_FAILED and "user_id" in str(refused.value)
    assert publisher.publish("", q, _body(5), user_id=own) == "ack"

    c = open_consumer(vhost.admin_url, q, transport=transport, ca_file=vhost.info.ca_file)
    try:
        got = _drain(c, 5)
        assert [d.user_id for d in got] == [own, own, own, None, own]
        c.ack_through(got[-1].tag)
    finally:
        c.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_multiple_ack_after_nacks_settles_the_rest_and_the_channel_lives(
    vhost: Broker, publisher: Any, transport: str
) -> None:
    q = f"settle-{uuid.uuid4().hex[:10]}"
    publisher.declare_queue(q)
    publisher.publish_batch([("", q, _body(i), None, None) for i in range(4)])
    c = open_consumer(vhost.admin_url, q, transport=transport, ca_file=vhost.info.ca_file)
    try:
        got = _drain(c, 4)
        assert len(got) == 4
        c.nack(got[1].tag, requeue=False)
        c.nack(got[3].tag, requeue=False)  # the last one: the multiple-ack must not name it
        c.ack_through(got[3].tag)
        # the channel is still open: a new message arrives on the same consumer, not redelivered
        publisher.publish("", q, _body(9))
        more = _drain(c, 1)
        assert len(more) == 1 and not more[0].redelivered and more[0].tag > got[3].tag
        c.ack_through(more[0].tag)
    finally:
        c.close()
    assert vhost.queue_depth(q) == 0  # nothing came back: every delivery was settled once
