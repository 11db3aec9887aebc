"""Bad inputs over AMQP: deeply nested bodies (issue 12, finding 6), on a private broker node of
this module (configured exactly as the local stack's: ``RabbitNode.prepare``).

Python's ``json`` raises ``RecursionError`` (not ``ValueError``) on them; on the pika transport
that escaped the consumer, the router reconnected and the same message came back first,
forever.  Both transports must hand any undecodable body back as an invalid delivery
(``message=None``, ``invalid=<reason>``) so the caller dead-letters it, and go on with the next
message.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from volley import _core
from volley.local.broker import BrokerInfo, RabbitNode
from volley.protocol.messages import InvalidMessageError, decode, pack_result
from volley.transport import open_consumer, open_publisher

TRANSPORTS = ["native", "python"]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerInfo]:
    node = RabbitNode(Path(tmp_path_factory.mktemp("bad-inputs-broker")))
    info = node.prepare()
    node.start(info)
    try:
        yield info
    finally:
        node.stop(info)


def _envelope(data_json: str) -> bytes:
    return b"\x01" + ('{"message_type":"result","data":' + data_json + "}").encode()


def deep_bodies() -> dict[str, bytes]:
    tid = str(uuid.uuid4())
    return {
        # unterminated and terminated arrays: json's C scanner recurses once per level
        "arrays": _envelope("[" * 100_000 + "]" * 100_000),
        "objects": _envelope('{"a":' * 50_000 + "1" + "}" * 50_000),
        # a valid result whose details nest deeper than any decoder follows
        "details": _envelope(f'{{"task_id":"{tid}","data":"00\\nx","details":{{"d":'
                             + "[" * 20_000 + "]" * 20_000 + "}}"),
    }


# --- the decoders ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(deep_bodies()))
def test_python_decode_refuses_deep_nesting_as_invalid(name: str) -> None:
    with pytest.raises(InvalidMessageError, match="nest"):
        decode(deep_bodies()[name])


@pytest.mark.parametrize("name", list(deep_bodies()))
def test_native_decode_refuses_deep_nesting(name: str) -> None:
    # serde_json stops at 128 levels (its recursion limit), well before the thread's stack
    with pytest.raises(ValueError, match="recursion limit exceeded"):
        _core.decode(deep_bodies()[name])


# --- both transports ---------------------------------------------------------------------------------
def _drain(consumer: Any, want: int, rounds: int = 300) -> list[Any]:
    got: list[Any] = []
    for _ in range(rounds):
        if len(got) >= want:
            break
        got.extend(consumer.next_batch(64, timeout=0.2))
    return got


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_deeply_nested_bodies_are_invalid_deliveries_and_the_next_one_arrives(
        broker: BrokerInfo, transport: str) -> None:
    pub = open_publisher(broker.url(), transport=transport, ca_file=broker.ca_file)
    dlq = f"bad-dlq-{uuid.uuid4().hex[:8]}"
    q = f"bad-{uuid.uuid4().hex[:8]}"
    pub.declare_queue(dlq)
    pub.declare_queue(q, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    bad = deep_bodies()
    good_id = str(uuid.uuid4())
    bodies = [*bad.values(), pack_result(good_id, "00\ngood\n")]
    assert pub.publish_batch([("", q, b, None, None) for b in bodies]) == ["ack"] * len(bodies)

    c = open_consumer(broker.url(), q, transport=transport, ca_file=broker.ca_file)
    try:
        got = _drain(c, len(bodies))
        assert [d.body for d in got] == bodies  # in order, none lost, none repeated
        for d in got[:-1]:
            assert d.message is None and d.invalid is not None and "not valid JSON" in d.invalid, d.invalid
            assert d.redelivered is False  # the consumer never broke and reconnected
            c.nack(d.tag, requeue=False)
        assert got[-1].invalid is None and got[-1].message.task_id == good_id
        c.ack(got[-1].tag)
        assert c.next_batch(10, timeout=0.3) == []
    finally:
        c.close()
    dead = open_consumer(broker.url(), dlq, transport=transport, ca_file=broker.ca_file, decode=False)
    try:
        assert [d.body for d in _drain(dead, len(bad))] == list(bad.values())
    finally:
        dead.close()
    pub.close()
