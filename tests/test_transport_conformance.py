"""One conformance suite, run against both transports (native Rust and pika).

It uses its own private broker node (not the session stack's) because one test restarts it.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from volley.local.broker import BrokerInfo, RabbitNode
from volley.protocol.messages import pack_result
from volley.transport import open_consumer, open_publisher

TRANSPORTS = ["native", "python"]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RabbitNode, BrokerInfo]]:
    n = RabbitNode(Path(tmp_path_factory.mktemp("conformance-broker")))
    info = n.prepare()
    n.start(info)
    try:
        yield n, info
    finally:
        n.stop(info)


@pytest.fixture()
def broker(node: tuple[RabbitNode, BrokerInfo]) -> BrokerInfo:
    return node[1]


def _queue(pub: Any, *, dlq: str | None = None) -> str:
    name = f"conf-{uuid.uuid4().hex[:10]}"
    args = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq} if dlq else None
    pub.declare_queue(name, arguments=args)
    return name


def _results(n: int) -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        tid = str(uuid.uuid4())
        out.append((tid, pack_result(tid, f"00\npayload-{i}\n")))
    return out


def _drain(consumer: Any, want: int, rounds: int = 200) -> list[Any]:
    got: list[Any] = []
    for _ in range(rounds):
        if len(got) >= want:
            break
        got.extend(consumer.next_batch(1024, timeout=0.2))
    return got


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_tls_consume_decodes_and_keeps_properties(broker: BrokerInfo, transport: str) -> None:
    pub = open_publisher(broker.url(), transport=transport, ca_file=broker.ca_file)
    q = _queue(pub)
    msgs = _results(5)
    outcomes = pub.publish_batch([("", q, body, {"k": "v", "n": 3}, 1700000000 + i)
                                  for i, (_, body) in enumerate(msgs)])
    assert outcomes == ["ack"] * 5
    c = open_consumer(broker.url(), q, transport=transport, ca_file=broker.ca_file)
    got = _drain(c, 5)
    assert [d.message.task_id for d in got] == [tid for tid, _ in msgs]
    assert [d.message.data for d in got] == [f"00\npayload-{i}\n" for i in range(5)]
    assert all(d.message.kind == "result" and not d.message.is_error for d in got)
    assert got[0].headers == {"k": "v", "n": 3}
    assert [d.timestamp for d in got] == [1700000000 + i for i in range(5)]
    assert got[0].routing_key == q and got[0].redelivered is False
    assert [d.body for d in got] == [b for _, b in msgs]
    tags = [d.tag for d in got]
    assert tags == sorted(tags) and len(set(tags)) == 5
    c.ack_through(tags[-1])
    c.close()
    pub.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_batches_respect_max_and_lose_nothing(broker: BrokerInfo, transport: str) -> None:
    pub = open_publisher(broker.url(), transport=transport, ca_file=broker.ca_file)
    q = _queue(pub)
    msgs = _results(600)
    assert set(pub.publish_batch([("", q, b, None, None) for _, b in msgs])) == {"ack"}
    c = open_consumer(broker.url(), q, transport=transport, ca_file=broker.ca_file, prefetch=200)
    seen: list[str] = []
    for _ in range(500):
        batch = c.next_batch(64, timeout=0.2)
        assert len(batch) <= 64
        if batch:
            seen.extend(d.message.task_id for d in batch)
            c.ack_through(batch[-1].tag)  # acking frees prefetch credit for the rest
        if len(seen) == 600:
            break
    assert seen == [tid for tid, _ in msgs]
    c.close()
    pub.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_unacked_deliveries_are_redelivered_after_close(broker: BrokerInfo, transport: str) -> None:
    pub = open_publisher(broker.url(), transport=transport, ca_file=broker.ca_file)
    q = _queue(pub)
    msgs = _results(10)
    pub.publish_batch([("", q, b, None, None) for _, b in msgs])
    c = open_consumer(broker.url(), q, transport=transport, ca_file=broker.ca_file)
    got = _drain(c, 10)
    c.ack_through(got[4].tag)
    c.close()
    c2 = open_consumer(broker.url(), q, transport=transport, ca_file=broker.ca_file)
    again = _drain(c2, 5)
    assert [d.message.task_id for d in again] == [tid for tid, _ in msgs[5:]]
    assert all(d.redelivered for d in again)
    c2.ack_through(again[-1].tag)
    assert c2.next_batch(10, timeout=0.3) == []
    c2.close()
    pub.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_invalid_message_is_reported_and_dead_lettered(broker: BrokerInfo, transport: str) -> None:
    pub = open_publisher(broker.url(), transport=transport, ca_file=broker.ca_file)
    dlq = _queue(pub)
    q = _queue(pub, dlq=dlq)
    pub.publish_batch([("", q, b"\x01{not json", None, None), ("", q, b"\x07abc", None, None)])
    c = open_consumer(broker.url(), q, transport=transport, ca_file=broker.ca_file)
    bad = _drain(c, 2)
    assert [d.message for d in bad] == [None, None]
    assert "JSON" in bad[0].invalid and "version" in bad[1].invalid
    for d in bad:
        c.nack(d.tag, requeue=False)
    c.close()
    dead = open_consumer(broker.url(), dlq, transport=transport, ca_file=broker.ca_file)
    got = _drain(dead, 2)
    assert [d.body for d in got] == [b"\x01{not json", b"\x07abc"]
    dead.close()
    pub.close()


def _batches_seen(broker: BrokerInfo, transport: str) -> list[tuple[Any, Any, Any]]:
    """What a consumer of ``transport`` makes of three result batches: (message, invalid, batch
    as (body, task id, invalid)) each."""
    from volley.protocol.batches import BATCH_HEADER, pack_batch

    good = _results(2)
    bodies = [good[0][1], b"\x07abc", good[1][1]]
    pub = open_publisher(broker.url(), transport="python", ca_file=broker.ca_file)
    q = _queue(pub)
    pub.publish_batch([
        ("", q, pack_batch(bodies), {BATCH_HEADER: 3}, None),
        ("", q, pack_batch(bodies), {BATCH_HEADER: 4}, None),  # announces more than it holds
        ("", q, pack_batch(bodies), {BATCH_HEADER: "3"}, None),
    ])
    pub.close()
    c = open_consumer(broker.url(), q, transport=transport, ca_file=broker.ca_file)
    got = _drain(c, 3)
    c.close()
    return [(d.message, d.invalid,
             None if d.batch is None else [(b, m.task_id if m else None, why) for b, m, why in d.batch])
            for d in got]


def test_both_transports_split_and_decode_result_batches_alike(broker: BrokerInfo) -> None:
    """A batch splits into its results, each decoded (or refused) on its own; a malformed one
    is invalid with the same text from the Rust consumer and the pure-Python one."""
    native, python = _batches_seen(broker, "native"), _batches_seen(broker, "python")
    for seen in (native, python):
        (m, invalid, parts), (_m2, bad_count, none2), (_m3, bad_type, none3) = seen
        assert m is None and invalid is None and none2 is None and none3 is None
        assert [tid is not None for _b, tid, _w in parts] == [True, False, True]
        assert parts[1][0] == b"\x07abc" and "unrecognized protocol version" in parts[1][2]
        assert bad_count == "not a valid result batch: the header announced 4 result(s), the body holds 3"
        assert bad_type == "not a valid result batch: header 'volley-batch' must be a positive integer, got '3'"
    # same bodies and errors; the task ids are random per call, so compare their shape
    assert [(len(b), w) for b, _t, w in native[0][2]] == [(len(b), w) for b, _t, w in python[0][2]]
    assert [x[1] for x in native[1:]] == [x[1] for x in python[1:]]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_close_during_wait_returns_promptly(broker: BrokerInfo, transport: str) -> None:
    pub = open_publisher(broker.url(), transport=transport, ca_file=broker.ca_file)
    q = _queue(pub)
    c = open_consumer(broker.url(), q, transport=transport, ca_file=broker.ca_file)
    out: list[Any] = []
    started = threading.Event()

    def wait() -> None:
        started.set()
        out.append(c.next_batch(10, timeout=60))

    t = threading.Thread(target=wait)
    t.start()
    started.wait()
    c.close()
    t.join(timeout=15)
    assert not t.is_alive(), "next_batch did not return after close()"
    assert out == [[]]
    assert c.closed
    c.close()  # idempotent
    assert c.next_batch(1, timeout=0.1) == []
    pub.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_publisher_reports_returned_messages(broker: BrokerInfo, transport: str) -> None:
    pub = open_publisher(broker.url(), transport=transport, ca_file=broker.ca_file)
    q = _queue(pub)
    outcomes = pub.publish_batch([("", q, b"x", None, None), ("", "no-such-queue-" + q, b"y", None, None)],
                                 mandatory=True)
    assert outcomes == ["ack", "returned"]
    assert pub.declare_queue(q, passive=True) == 1
    pub.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_missing_queue_and_bad_credentials_are_connection_errors(broker: BrokerInfo, transport: str) -> None:
    with pytest.raises(ConnectionError):
        open_consumer(broker.url(), f"missing-{uuid.uuid4().hex}", transport=transport, ca_file=broker.ca_file)
    with pytest.raises(ConnectionError):
        open_consumer(broker.url(password="wrong"), "x", transport=transport, ca_file=broker.ca_file)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_untrusted_server_certificate_is_refused(broker: BrokerInfo, transport: str, tmp_path: Path) -> None:
    from volley.local.certs import ensure_tls_files

    other_ca = ensure_tls_files(tmp_path / "other")["ca"]
    with pytest.raises(ConnectionError):
        open_consumer(broker.url(), "x", transport=transport, ca_file=str(other_ca))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_consumer_reports_a_lost_connection_instead_of_reconnecting_itself(
    node: tuple[RabbitNode, BrokerInfo], transport: str
) -> None:
    """Only the one reconnect loop (volley.transport.reconnect) reconnects: a consumer whose
    broker went away raises on its next wait, and a publisher is replaced once on next use."""
    n, info = node
    pub = open_publisher(info.url(), transport=transport, ca_file=info.ca_file)
    q = _queue(pub)
    first, second = _results(2)
    pub.publish_batch([("", q, first[1], None, None)])
    c = open_consumer(info.url(), q, transport=transport, ca_file=info.ca_file)
    (d,) = _drain(c, 1)
    c.ack_through(d.tag)
    n.stop(info)
    with pytest.raises(ConnectionError, match="lost the connection"):
        for _ in range(600):  # the loss is seen within a wait or two; bounded so a hang fails
            c.next_batch(10, timeout=0.2)
    n.start(info)
    pub.publish_batch([("", q, second[1], None, None)])  # the idle publisher reconnects at once
    c2 = open_consumer(info.url(), q, transport=transport, ca_file=info.ca_file)
    again = _drain(c2, 1, rounds=400)
    assert [x.message.task_id for x in again] == [second[0]]
    c2.ack_through(again[0].tag)
    c2.close()
    c.close()
    pub.close()


def _until(check: Any, what: str, timeout: float = 60.0) -> None:
    deadline = threading.Event()
    timer = threading.Timer(timeout, deadline.set)
    timer.start()
    try:
        while not check():
            if deadline.wait(0.02):
                raise AssertionError(f"timed out waiting for {what}")
    finally:
        timer.cancel()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_consume_loop_waits_for_its_queue_and_rides_out_a_broker_restart(
    node: tuple[RabbitNode, BrokerInfo], transport: str
) -> None:
    from volley.transport.reconnect import ConsumeLoop, ReconnectPolicy

    n, info = node
    name = f"loop-{uuid.uuid4().hex[:10]}"
    got: list[str] = []
    connected: list[bool] = []

    def handle(c: Any, batch: Any) -> None:
        got.extend(d.message.task_id for d in batch)
        c.ack_through(batch[-1].tag)

    loop = ConsumeLoop(
        "conformance", lambda: open_consumer(info.url(), name, transport=transport, ca_file=info.ca_file),
        handle, policy=ReconnectPolicy(first_delay=0.05, max_delay=0.5),
        on_connected=lambda _c, again: connected.append(again),
    )
    t = threading.Thread(target=loop.run, daemon=True)
    t.start()
    _until(lambda: loop.outage.attempts >= 2, "the missing queue to be retried")
    pub = open_publisher(info.url(), transport=transport, ca_file=info.ca_file)
    pub.declare_queue(name)
    first, second = _results(2)
    pub.publish_batch([("", name, first[1], None, None)])
    _until(lambda: got == [first[0]], "the first message")
    assert connected == [True]  # connected after an outage: the place to recover what was missed
    # a bare consumer reports the loss instead of retrying: retrying is the loop's one policy
    bare = open_consumer(info.url(), _queue(pub), transport=transport, ca_file=info.ca_file)
    pub.close()
    n.stop(info)
    try:
        with pytest.raises(ConnectionError):
            for _ in range(300):
                bare.next_batch(10, timeout=0.1)
    finally:
        n.start(info)
        bare.close()
    pub = open_publisher(info.url(), transport=transport, ca_file=info.ca_file)
    pub.publish_batch([("", name, second[1], None, None)])
    _until(lambda: got == [first[0], second[0]], "the message sent after the restart")
    assert connected == [True, True]
    loop.stop()
    t.join(10)
    assert not t.is_alive()
    pub.delete_queue(name)
    pub.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_consume_loop_gives_up_past_its_limit(broker: BrokerInfo, transport: str) -> None:
    from volley.transport.reconnect import ConsumeLoop, GaveUp, ReconnectPolicy

    name = f"never-{uuid.uuid4().hex[:10]}"
    loop = ConsumeLoop(
        "conformance", lambda: open_consumer(broker.url(), name, transport=transport, ca_file=broker.ca_file),
        lambda _c, _b: None, policy=ReconnectPolicy(first_delay=0.05, max_delay=0.2, give_up_after=0.5),
    )
    with pytest.raises(GaveUp, match=name):
        loop.run()
    assert loop.outage.attempts >= 2


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_closed_channel_carries_its_amqp_code(broker: BrokerInfo, transport: str) -> None:
    from volley.transport.base import NOT_FOUND, channel_code

    with pytest.raises(ConnectionError) as info:
        open_consumer(broker.url(), f"absent-{uuid.uuid4().hex[:8]}", transport=transport, ca_file=broker.ca_file)
    assert channel_code(info.value) == NOT_FOUND


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_set_prefetch_changes_the_running_consumers_credit(broker: BrokerInfo, transport: str) -> None:
    """The channel-wide prefetch bounds unacked deliveries below the subscription's own
    ceiling, and set_prefetch moves it on the running consumer (the endpoint adapts it)."""
    pub = open_publisher(broker.url(), transport=transport, ca_file=broker.ca_file)
    q = _queue(pub)
    pub.publish_batch([("", q, b, None, None) for _, b in _results(20)])
    c = open_consumer(broker.url(), q, transport=transport, ca_file=broker.ca_file, prefetch=100,
                      channel_prefetch=3)
    held = _drain(c, 3)
    assert len(held) == 3 and c.next_batch(100, timeout=0.5) == []  # no credit for a 4th
    c.set_prefetch(8)
    held += _drain(c, 5)  # the 5 more that the new credit lets through
    assert len(held) == 8 and c.next_batch(100, timeout=0.5) == []
    c.ack_through(held[-1].tag)
    rest = _drain(c, 8)
    assert len(rest) == 8  # the same 8 of credit, not the subscription's 100
    c.ack_through(rest[-1].tag)
    assert len(_drain(c, 4)) == 4
    c.close()
    pub.close()
