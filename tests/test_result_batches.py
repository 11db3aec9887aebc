"""Result batches (``volley.protocol.batches``): the framing, how an endpoint's ``ResultSender``
groups results into messages, and a batch sent through the real broker to the real router."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service_helpers import (
    Service,
    endpoint_publish_batch,
    result_body,
    sdk_queue,
    serializer,
    wait_for,
)
from volley.endpoint.results import ResultSender
from volley.endpoint.store import ResultStore
from volley.protocol import topology as topo
from volley.protocol.batches import (
    BATCH_HEADER,
    CAPABILITY,
    MAX_BATCH_BYTES,
    InvalidBatch,
    decode_batch,
    messages_for,
    pack_batch,
    unpack_batch,
)
from volley.protocol.messages import decode
from volley.transport import open_publisher

pytest_plugins = ["service_fixtures"]


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=20))
def test_a_batch_unpacks_to_what_was_packed(bodies: list[bytes]) -> None:
    assert unpack_batch(pack_batch(bodies), len(bodies)) == bodies


@pytest.mark.parametrize("count, body", [
    (0, b""), (-1, b""), (True, pack_batch([b"x"])), (None, pack_batch([b"x"])),
    (1, b"\x00\x00"), (1, b"\x00\x00\x00\x05abc"), (2, pack_batch([b"x"])), (1, pack_batch([b"x", b"y"])),
    (1, b""),
])
def test_a_malformed_batch_is_refused(count: Any, body: bytes) -> None:
    with pytest.raises(InvalidBatch):
        unpack_batch(body, count)


def test_results_are_grouped_up_to_the_size_limit_and_a_lone_one_goes_plain() -> None:
    small, big = b"s" * 1000, b"b" * (MAX_BATCH_BYTES - 10)
    assert messages_for([small]) == [(1, small, None)]
    grouped = messages_for([small, small, small, big, small, b"x" * (MAX_BATCH_BYTES + 1)])
    assert [(n, headers) for n, _b, headers in grouped] == [
        (3, {BATCH_HEADER: 3}), (1, None), (1, None), (1, None),
    ]
    assert unpack_batch(grouped[0][1], 3) == [small] * 3
    assert grouped[1][1] == big
    for n, body, _h in grouped:
        assert n == 1 or len(body) <= MAX_BATCH_BYTES + 4 * n


class Counting:
    """A real publisher that counts the messages of each ``publish_batch``."""

    def __init__(self, publisher: Any) -> None:
        self.publisher = publisher
        self.published: list[int] = []

    def publish_batch(self, messages: Any, **kw: Any) -> Any:
        self.published.append(len(messages))
        return self.publisher.publish_batch(messages, **kw)

    def close(self) -> None:
        self.publisher.close()


@pytest.mark.parametrize("transport", ["native", "python"])
def test_an_endpoint_sends_a_burst_of_results_as_one_message(svc: Service, tmp_path: Path, transport: str) -> None:
    """Through the real broker to the real router: the service offers batches at registration,
    the sender puts 40 results in one confirmed message, and each is stored and forwarded."""
    alice = svc.new_user()
    fid = svc.register_function(alice)
    reg = svc.register_endpoint(alice)
    info = reg["result_queue_info"]
    assert info[CAPABILITY] is True
    out = svc.submit(alice, reg["endpoint_id"], fid, *[(i,) for i in range(40)])
    svc.broker.drain(f"{reg['endpoint_id']}.tasks")
    ids = out["tasks"][fid]

    publisher = Counting(open_publisher(info["connection_url"], transport=transport, ca_file=svc.broker.info.ca_file))
    confirmed: list[str] = []
    all_confirmed = threading.Event()

    def on_confirmed(task_id: str) -> None:
        confirmed.append(task_id)
        if len(confirmed) == len(ids):
            all_confirmed.set()

    kw = info["queue_publish_kwargs"]
    sender = ResultSender(publisher, (kw["exchange"], kw["routing_key"]), ResultStore(tmp_path / "unacked"),
                          on_confirmed, endpoint_id=reg["endpoint_id"], batches=True)
    try:
        for i, tid in enumerate(ids):  # queued before the thread starts: one burst
            sender.put(tid, result_body(tid, i))
        sender.start()
        assert all_confirmed.wait(60), f"{len(confirmed)} of {len(ids)} results confirmed"
    finally:
        sender.stop()
        publisher.close()
    assert confirmed == ids and publisher.published == [1]
    wait_for(lambda: all(svc.task(alice, t)["status"] == "success" for t in ids), what="every result stored")
    assert serializer.deserialize(svc.task(alice, ids[7])["result"]) == 7
    forwarded = svc.broker.drain(sdk_queue(alice, out["task_group_id"]))
    assert [decode(b).task_id for _m, _p, b in forwarded] == ids
    assert svc.broker.queue_depth(topo.RESULTS_QUEUE) == 0


@pytest.mark.parametrize("reader", ["volley", "upstream"])
def test_the_router_forwards_batches_only_to_an_sdk_that_reads_them(svc: Service, reader: str) -> None:
    """A group submitted with ``volley_result_batches`` (Volley's SDK) gets a batch of results as
    one message; a group an upstream SDK submitted gets them one per message, byte for byte.
    A reload (GET /v2/taskgroup) says again who reads the queue."""
    alice = svc.new_user()
    fid = svc.register_function(alice)
    reg = svc.register_endpoint(alice)
    extra = {"volley_result_batches": True} if reader == "volley" else {}
    out = svc.submit(alice, reg["endpoint_id"], fid, *[(i,) for i in range(6)], **extra)
    svc.broker.drain(f"{reg['endpoint_id']}.tasks")
    ids = out["tasks"][fid]
    queue = sdk_queue(alice, out["task_group_id"])
    bodies = [result_body(tid, i) for i, tid in enumerate(ids)]
    endpoint_publish_batch(svc, reg, bodies[:3])
    wait_for(lambda: svc.broker.queue_depth(queue) >= (1 if reader == "volley" else 3), what="the forwards")
    forwarded = svc.broker.drain(queue)
    if reader == "volley":
        ((_m, props, body),) = forwarded
        assert props.headers == {BATCH_HEADER: 3} and unpack_batch(body, 3) == bodies[:3]
    else:
        assert [b for _m, p, b in forwarded] == bodies[:3]
        assert all(not p.headers for _m, p, _b in forwarded)
    # the other kind of SDK reloads the group: from now on the router sends what it reads
    flip = {} if reader == "volley" else {"volley_result_batches": "true"}
    r = svc.client.get(f"/v2/taskgroup/{out['task_group_id']}", params=flip, headers=alice.headers)
    assert r.status_code == 200, r.text
    endpoint_publish_batch(svc, reg, bodies[3:])
    wait_for(lambda: svc.broker.queue_depth(queue) >= (3 if reader == "volley" else 1), what="the forwards")
    forwarded = svc.broker.drain(queue)
    if reader == "volley":
        assert [b for _m, _p, b in forwarded] == bodies[3:]
    else:
        ((_m, props, body),) = forwarded
        assert props.headers == {BATCH_HEADER: 3} and unpack_batch(body, 3) == bodies[3:]
    assert svc.broker.queue_depth(topo.RESULTS_QUEUE) == 0


class Settled:
    """What a watcher did with deliveries: the tags it dead-lettered."""

    def __init__(self) -> None:
        self.dead: list[int] = []

    def nack(self, tag: int, *, requeue: bool) -> None:
        assert not requeue
        self.dead.append(tag)


def test_the_sdk_resolves_every_future_of_a_batch_and_dead_letters_a_bad_one() -> None:
    from volley.protocol.messages import pack_result
    from volley.sdk.future import ComputeFuture
    from volley.sdk.watcher import ResultWatcher
    from volley.serialize import ComputeSerializer
    from volley.transport.base import PikaDelivery

    class Offline:
        fx_serializer = ComputeSerializer()
        ca_file = None

    ids = [str(uuid.uuid4()) for _ in range(4)]
    bodies = [pack_result(tid, ComputeSerializer().serialize(i * 10)) for i, tid in enumerate(ids)]
    w = ResultWatcher(str(uuid.uuid4()), Offline(), transport="python", port=None)
    futures = [ComputeFuture(tid) for tid in ids]
    for f in futures:
        w._open[f.task_id] = f

    def delivery(tag: int, body: bytes, headers: dict[str, Any]) -> PikaDelivery:
        # as the pure-Python consumer hands out a result batch
        parts = decode_batch(body, headers[BATCH_HEADER], decode)
        return PikaDelivery(tag, False, "", "q", 1700000000, headers, body, None, None, parts)

    settled = Settled()
    w._handle(settled, [
        delivery(1, pack_batch(bodies[:3]), {BATCH_HEADER: 3}),
        delivery(2, pack_batch([bodies[3], b"junk"]), {BATCH_HEADER: 2}),
    ])
    assert [f.result(timeout=5) for f in futures[:3]] == [0, 10, 20]
    assert settled.dead == [2] and not futures[3].done()  # the rest is still awaited
