"""Bad inputs over AMQP: oversize messages (issue 12, finding 4, the broker part), on a private
broker node of this module configured exactly as the local stack's (``RabbitNode.prepare``).

The broker refuses a message above ``max_message_size`` (16 MiB, just above the 10 MiB payload
limit) by closing the publisher's channel, instead of storing anything up to RabbitMQ's default
of 128 MiB.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pika.exceptions
import pytest

from volley.local.broker import MAX_MESSAGE_SIZE, BrokerInfo, RabbitNode
from volley.protocol import topology as topo
from volley.protocol.messages import pack_result
from volley.serialize import ComputeSerializer
from volley.transport import open_publisher
from volley.transport.pika_transport import connection_parameters

TRANSPORTS = ["native", "python"]
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerInfo]:
    node = RabbitNode(Path(tmp_path_factory.mktemp("broker-limits")))
    info = node.prepare()
    node.start(info)
    try:
        yield info
    finally:
        node.stop(info)


def _pika(info: BrokerInfo) -> pika.BlockingConnection:
    return pika.BlockingConnection(connection_parameters(info.url(), ca_file=info.ca_file))


def test_max_message_size_is_just_above_the_payload_limit() -> None:
    # a task is function code + arguments (together at most MAX_PAYLOAD_SIZE characters) in
    # a JSON envelope: ~10 MiB for the default base64 serializers, plus escapes
    assert topo.MAX_PAYLOAD_SIZE < MAX_MESSAGE_SIZE <= 16 * MIB


def test_broker_refuses_a_message_over_the_limit_and_takes_the_largest_payload(broker: BrokerInfo) -> None:
    conn = _pika(broker)
    ch = conn.channel()
    ch.confirm_delivery()
    q = f"big-{uuid.uuid4().hex[:8]}"
    ch.queue_declare(q, durable=True)
    # the largest result an endpoint sends: 10 MiB characters of default-serialized data
    # (MIME base64 lines, whose newlines the JSON envelope escapes)
    data = ComputeSerializer().serialize(os.urandom(topo.MAX_PAYLOAD_SIZE * 3 // 4 * 76 // 77 - 64))
    assert 0.99 * topo.MAX_PAYLOAD_SIZE < len(data) <= topo.MAX_PAYLOAD_SIZE
    largest = pack_result(str(uuid.uuid4()), data)
    assert 10 * MIB < len(largest) < 10.2 * MIB
    ch.basic_publish("", q, largest, pika.BasicProperties(delivery_mode=2))  # confirmed, or raises
    assert ch.queue_declare(q, passive=True).method.message_count == 1
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        ch.basic_publish("", q, b"\x01" + b" " * (MAX_MESSAGE_SIZE + 1), pika.BasicProperties(delivery_mode=2))
    assert info.value.reply_code == 406 and "larger than configured max size" in info.value.reply_text
    ch = conn.channel()  # the connection survives; only that channel was closed
    assert ch.queue_declare(q, passive=True).method.message_count == 1  # nothing of it was stored
    ch.queue_delete(q)
    conn.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_oversize_publish_fails_loudly_on_both_transports(broker: BrokerInfo, transport: str) -> None:
    pub = open_publisher(broker.url(), transport=transport, ca_file=broker.ca_file)
    q = f"big-{uuid.uuid4().hex[:8]}"
    pub.declare_queue(q)
    # both say so with a ConnectionError subclass (volley._core.ChannelClosed, ChannelClosedError)
    with pytest.raises(ConnectionError, match=r"406.*larger than configured max size 16777216"):
        pub.publish_batch([("", q, b"\x01" + b" " * (MAX_MESSAGE_SIZE + 1), None, None)])
    # the publisher recovers for the next message
    assert pub.publish_batch([("", q, pack_result(str(uuid.uuid4()), "00\nok\n"), None, None)]) == ["ack"]
    assert pub.declare_queue(q, passive=True) == 1
    pub.close()
