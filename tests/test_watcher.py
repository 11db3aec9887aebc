"""Result watcher bookkeeping that needs no broker: results received before their future is
registered must survive the watcher that received them."""

from __future__ import annotations

import threading
import uuid

from volley.protocol.messages import decode, pack_result
from volley.sdk import watcher as W
from volley.sdk.future import ComputeFuture
from volley.serialize import ComputeSerializer


class Unreachable:
    fx_serializer = ComputeSerializer()
    ca_file = None

    def get_result_amqp_url(self, **_: object) -> dict:
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
    client = Unreachable()
    W._UNCLAIMED[W._key(client, tg)] = {tid: (None, _result(tid, 42))}
    w = W.watcher_for(tg, client, transport="python", port=None)
    fut = ComputeFuture(tid)
    w.watch([fut])
    assert fut.result(timeout=5) == 42
    assert W._key(client, tg) not in W._UNCLAIMED
    w.shutdown()


def test_the_same_task_group_on_two_services_gets_a_watcher_each() -> None:
    """A process-default task group id can be used with two services (two local stacks): each
    service's results come from its own broker, so each needs its own watcher."""
    tg = str(uuid.uuid4())
    a, b = Unreachable(), Unreachable()
    a.web_service_address, b.web_service_address = "http://127.0.0.1:1", "http://127.0.0.1:2"
    wa = W.watcher_for(tg, a, transport="python", port=None)
    wb = W.watcher_for(tg, b, transport="python", port=None)
    try:
        assert wa is not wb and wa.client is a and wb.client is b
        assert W.watcher_for(tg, a, transport="python", port=None) is wa
    finally:
        wa.shutdown()
        wb.shutdown()


def test_outstanding_futures_cost_the_gc_one_object_each() -> None:
    """A future's condition, waiter list and callback list are made on first use: with 100,000
    futures outstanding the collector's passes over per-future lists dominated submit()."""
    import gc
    from concurrent.futures import FIRST_COMPLETED, as_completed, wait

    before = len(gc.get_objects())
    futures = [ComputeFuture(f"t{i}") for i in range(5000)]
    assert (len(gc.get_objects()) - before) / len(futures) < 1.1

    # and they still behave as futures: callbacks before and after, wait, as_completed, threads
    seen: list[object] = []
    futures[0].add_done_callback(lambda f: seen.append(f.result()))
    waiter = threading.Thread(target=lambda: seen.append(len(wait(futures[:3]).done)))
    waiter.start()
    futures[0].set_result("a")
    futures[1].set_exception(ValueError("b"))
    futures[2].set_result("c")
    waiter.join(10)
    futures[2].add_done_callback(lambda f: seen.append(f.result()))
    assert seen == ["a", 3, "c"]
    assert wait(futures[:3], return_when=FIRST_COMPLETED).done
    assert {f.task_id for f in as_completed(futures[:3], timeout=5)} == {"t0", "t1", "t2"}


def test_unmatched_results_are_bounded_and_a_late_future_is_still_resolved(monkeypatch) -> None:
    """Results nobody claims must not grow without bound (issue 12, finding 7); a result let
    go is still delivered, from the service, if its future turns up after all."""
    monkeypatch.setattr(W, "UNMATCHED_LIMIT", 3)
    asked: list[list[str]] = []

    class Service(Unreachable):
        class _api:  # the Client attribute the watcher calls
            @staticmethod
            def post(path: str, json: dict, **_: object) -> dict:
                asked.append(list(json["task_ids"]))
                return {"results": {t: {"status": "success", "completion_t": "1",
                                        "result": ComputeSerializer().serialize(t[-1])}
                                    for t in json["task_ids"]}}

    w = W.ResultWatcher(str(uuid.uuid4()), Service(), transport="python", port=None)
    ids = [str(uuid.uuid4()) for _ in range(5)]
    w.adopt({tid: (None, _result(tid, tid[-1])) for tid in ids})
    assert list(w._received) == ids[2:]  # the two oldest were let go, only their ids kept
    late = ComputeFuture(ids[0])
    w.watch([late])
    assert not late.done() and w._lookup == [ids[0]]
    w._after_wait(None)  # the watcher thread's next turn asks the service
    assert asked == [[ids[0]]]
    assert late.result(timeout=5) == ids[0][-1]
    kept = ComputeFuture(ids[4])
    w.watch([kept])  # a result still held resolves at once, without asking
    assert kept.result(timeout=5) == ids[4][-1] and len(asked) == 1


def test_a_busy_service_during_a_check_of_a_quiet_stream_costs_the_stream_nothing(monkeypatch) -> None:
    """The checks the watcher thread makes between waits (results let go, a quiet stream) meet a
    503 from a busy database or a restarting service: they are made again later, and nothing
    reaches the consume loop, which would take it for a lost broker and drop the stream."""
    from volley.sdk.http import ComputeAPIError

    calls: list[list[str]] = []

    class Busy(Unreachable):
        class _api:
            @staticmethod
            def post(path: str, json: dict, **_: object) -> dict:
                calls.append(list(json["task_ids"]))
                raise ComputeAPIError(503, "DATABASE_UNAVAILABLE", "the database is busy")

    w = W.ResultWatcher(str(uuid.uuid4()), Busy(), transport="python", port=None)
    quiet, late = ComputeFuture(str(uuid.uuid4())), ComputeFuture(str(uuid.uuid4()))
    w.watch([quiet])
    w._lookup.append(str(late.task_id))
    w._after_wait(None)  # raised ConnectionError before
    assert calls == [[late.task_id]] and w._lookup == [late.task_id]  # kept, to ask again
    w._lookup.clear()
    w._next_check = 0.0
    w._after_wait(None)  # the quiet check
    assert calls[-1] == [quiet.task_id]
    assert not quiet.done() and w._next_check > 0
