"""Result batches (``volley.protocol.batches``): the framing, how an endpoint's ``ResultSender``
groups results into messages, and a batch sent through the real broker to the real router."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service_helpers import Service, result_body, sdk_queue, serializer, wait_for
from volley.endpoint.results import ResultSender
from volley.endpoint.store import ResultStore
from volley.protocol import topology as topo
from volley.protocol.batches import (
    BATCH_HEADER,
    CAPABILITY,
    MAX_BATCH_BYTES,
    InvalidBatch,
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


def _sender(batches: bool) -> ResultSender:
    return ResultSender(None, ("results", "e.results"), None, lambda _t: None, batches=batches)  # type: ignore[arg-type]


def test_results_are_grouped_up_to_the_size_limit_and_a_lone_one_goes_plain() -> None:
    small, big = b"s" * 1000, b"b" * (MAX_BATCH_BYTES - 10)
    assert _sender(False)._messages([small, small]) == [(1, small, None), (1, small, None)]
    assert _sender(True)._messages([small]) == [(1, small, None)]
    grouped = _sender(True)._messages([small, small, small, big, small, b"x" * (MAX_BATCH_BYTES + 1)])
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
