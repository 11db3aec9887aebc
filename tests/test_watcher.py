"""Result watcher bookkeeping that needs no broker: results received before their future is
registered must survive the watcher that received them."""

from __future__ import annotations

import uuid

from volley.protocol.messages import decode, pack_result
from volley.sdk import watcher as W
from volley.sdk.future import ComputeFuture
from volley.serialize import ComputeSerializer


class Unreachable:
    fx_serializer = ComputeSerializer()
    ca_file = None

    def get_result_amqp_url(self) -> dict:
        raise ConnectionError("no broker in this test")


def _result(tid: str, value: object) -> object:
    return decode(pack_result(tid, ComputeSerializer().serialize(value)))


def test_a_successor_adopts_results_its_predecessor_could_not_match() -> None:
    tid = str(uuid.uuid4())
    successor = W.ResultWatcher(str(uuid.uuid4()), Unreachable(), transport="python", port=None)
    fut = ComputeFuture(tid)
    successor._open[tid] = fut
    successor.adopt({tid: (1700000000, _result(tid, 7))})
    assert fut.result(timeout=5) == 7
    later = str(uuid.uuid4())
    successor.adopt({later: (None, _result(later, 8))})  # no future yet: kept for watch()
    f2 = ComputeFuture(later)
    successor.watch([f2])
    assert f2.result(timeout=5) == 8


def test_results_left_by_a_stopped_watcher_reach_the_next_one() -> None:
    tg, tid = str(uuid.uuid4()), str(uuid.uuid4())
    W._UNCLAIMED[tg] = {tid: (None, _result(tid, 42))}
    w = W.watcher_for(tg, Unreachable(), transport="python", port=None)
    fut = ComputeFuture(tid)
    w.watch([fut])
    assert fut.result(timeout=5) == 42
    assert tg not in W._UNCLAIMED
    w.shutdown()
