"""``volley.progress``: the bar counts every future once as it finishes (failures apart), with
real futures resolved from other threads, then with the Executor's and reload_tasks()'s futures
against the local stack."""

from __future__ import annotations

import concurrent.futures as cf
import io
import re
import threading
import uuid
from typing import Any

import pytest

import volley
from volley import Executor
from volley.sdk.future import ComputeFuture


def frames(buf: io.StringIO) -> list[str]:
    """The bar's successive renderings (tqdm redraws in place with carriage returns)."""
    return [f.strip() for f in re.split(r"[\r\n]", buf.getvalue()) if f.strip()]


def counts(frame: str) -> tuple[int, int, int]:
    """(done, total, failed) as the bar shows them."""
    m = re.search(r"(\d+)/(\d+) \[.*failed=(\d+)\]", frame)
    assert m, f"not a progress frame: {frame!r}"
    return int(m[1]), int(m[2]), int(m[3])


def boom(i: int) -> int:
    raise ValueError(f"task {i} failed")


def test_counts_done_and_failed_futures_resolved_by_threads() -> None:
    buf = io.StringIO()
    with cf.ThreadPoolExecutor(4) as pool:
        # some finish before their callback is added, the rest while the bar waits
        futs = [pool.submit(lambda i: boom(i) if i % 5 == 0 else i, i) for i in range(40)]
        out = volley.progress(futs, desc="unit", file=buf, mininterval=0)
    assert out == futs and all(f.done() for f in futs)
    shown = [counts(f) for f in frames(buf)]
    assert shown[0] == (0, 40, 0)
    assert shown[-1] == (40, 40, 8)
    assert [d for d, _, _ in shown] == sorted(d for d, _, _ in shown)
    assert frames(buf)[-1].startswith("unit: 100%")


def test_wait_false_returns_at_once_and_follows_as_completed() -> None:
    buf = io.StringIO()
    futs: list[cf.Future[int]] = [cf.Future() for _ in range(25)]
    out = volley.progress(iter(futs), wait=False, file=buf, mininterval=0)
    assert out == futs and counts(frames(buf)[-1]) == (0, 25, 0)

    def resolve() -> None:
        for i, f in enumerate(reversed(futs)):
            if i == 3:  # as an executor does: as_completed hears of it through the second call
                f.cancel()
                f.set_running_or_notify_cancel()
            elif i % 7 == 0:
                f.set_exception(RuntimeError("no"))
            else:
                f.set_result(i)

    resolver = threading.Thread(target=resolve)
    resolver.start()
    seen = list(cf.as_completed(out, timeout=60))
    resolver.join()  # its last set_result has run the bar's callback too
    assert len(seen) == 25
    assert counts(frames(buf)[-1]) == (25, 25, 5)  # i = 0, 7, 14, 21 failed; i = 3 cancelled


def test_already_done_and_empty() -> None:
    done: cf.Future[int] = cf.Future()
    done.set_result(1)
    buf = io.StringIO()
    assert volley.progress([done], file=buf) == [done]
    assert counts(frames(buf)[-1]) == (1, 1, 0)
    empty = io.StringIO()
    assert volley.progress([], file=empty) == []
    assert frames(empty)[-1].startswith("0task") and "failed=0" in frames(empty)[-1]


def test_compute_futures_are_counted_without_making_conditions() -> None:
    """Thousands of futures resolved by several threads while the callbacks are being added:
    each counted exactly once, and none given the condition a waiter would need."""
    n = 4000
    futs = [ComputeFuture(str(uuid.uuid4())) for _ in range(n)]
    start = threading.Barrier(5)

    def resolve(part: list[ComputeFuture]) -> None:
        start.wait()
        for i, f in enumerate(part):
            if i % 10 == 0:
                f.set_exception(RuntimeError("no"))
            else:
                f.set_result(i)

    threads = [threading.Thread(target=resolve, args=(futs[k::4],)) for k in range(4)]
    for t in threads:
        t.start()
    buf = io.StringIO()
    start.wait()
    volley.progress(futs, file=buf)
    for t in threads:
        t.join()
    assert counts(frames(buf)[-1]) == (n, n, 4 * len(range(0, n // 4, 10)))
    assert not any("_lazy_condition" in f.__dict__ for f in futs)


def test_compute_future_callback_runs_once_whichever_comes_first() -> None:
    calls: list[ComputeFuture] = []
    for _ in range(300):
        f = ComputeFuture(str(uuid.uuid4()))
        t = threading.Thread(target=f.set_result, args=(1,))
        t.start()
        f.add_done_callback(calls.append)
        t.join()
    assert len(calls) == 300 and len({id(c) for c in calls}) == 300


# --- against the local stack -------------------------------------------------------------------
def fail_on_multiples_of_four(x: int) -> int:
    if x % 4 == 0:
        raise ValueError(f"{x} is a multiple of four")
    return x * x


@pytest.mark.stack
def test_executor_and_reload_tasks_futures(endpoint_id: str) -> None:
    tg = uuid.uuid4()
    buf = io.StringIO()
    with Executor(endpoint_id=endpoint_id, task_group_id=tg) as ex:
        futs = [ex.submit(fail_on_multiples_of_four, i) for i in range(30)]
        assert volley.progress(futs, desc="stack", file=buf, mininterval=0) == futs
    assert counts(frames(buf)[-1]) == (30, 30, 8)
    assert [f.result() for f in futs if f.exception() is None] == [i * i for i in range(30) if i % 4]

    again = io.StringIO()
    with Executor(endpoint_id=endpoint_id, task_group_id=tg) as ex:
        reloaded: Any = volley.progress(ex.reload_tasks(), desc="reloaded", file=again)
    assert len(reloaded) == 30
    assert counts(frames(again)[-1]) == (30, 30, 8)
    assert sorted(f.result() for f in reloaded if f.exception() is None) == sorted(
        i * i for i in range(30) if i % 4)
