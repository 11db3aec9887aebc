"""The process engine's worker pool (real spawned processes) and the endpoint's adaptive
prefetch rule."""

from __future__ import annotations

import os
import signal
import uuid
from concurrent.futures import Future, wait
from pathlib import Path

import pytest

from endpoint_helpers import wait_for
from task_functions import touch, touch_then_wait
from volley.endpoint.engines.base import CancelOutcome, EngineStopped, TaskCancelled
from volley.endpoint.engines.workers import WorkerLost, WorkerPool
from volley.endpoint.prefetch import CEILING, MAX_HELD_BYTES, AdaptivePrefetch
from volley.protocol.codec import decode, pack_task
from volley.serialize import ComputeSerializer

SER = ComputeSerializer()


def triple(x: int) -> int:
    return 3 * x


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def body(fn: object, *args: object) -> tuple[str, bytes]:
    tid = str(uuid.uuid4())
    buf = SER.pack_buffers([SER.serialize(fn)]) + SER.pack_buffers([SER.serialize(args), SER.serialize({})])
    return tid, pack_task(tid, buf)


def value(packed: bytes) -> object:
    m = decode(packed)
    assert not m.is_error, m.data
    return SER.deserialize(m.data)


def new_pool(size: int, run_dir: object) -> WorkerPool:
    return WorkerPool(size, {"endpoint_id": None, "run_dir": str(run_dir), "run_in_sandbox": False,
                             "allowed_serializers": None}, cancelled_error=TaskCancelled)


@pytest.fixture()
def pool(tmp_path: object) -> WorkerPool:
    p = new_pool(2, tmp_path)
    p.start()
    yield p
    p.shutdown(EngineStopped)


def test_many_short_tasks_each_get_their_own_result(pool: WorkerPool) -> None:
    tasks = [body(triple, i) for i in range(300)]
    futures = [pool.submit(tid, b, None) for tid, b in tasks]
    wait(futures, timeout=120)
    assert [value(f.result()) for f in futures] == [3 * i for i in range(300)]
    assert pool._depth() > 1  # short tasks: the workers were handed batches


def test_a_lost_worker_fails_only_the_task_it_ran(pool: WorkerPool) -> None:
    tid, b = body(die)
    doomed = pool.submit(tid, b, None)
    rest = [pool.submit(t, bb, None) for t, bb in (body(triple, i) for i in range(40))]
    with pytest.raises(WorkerLost, match="loss of a worker process"):
        doomed.result(timeout=120)
    assert [value(f.result(timeout=120)) for f in rest] == [3 * i for i in range(40)]
    assert pool.problem is None


def test_shutdown_fails_what_is_left_with_the_given_error(tmp_path: object) -> None:
    p = WorkerPool(1, {"endpoint_id": None, "run_dir": str(tmp_path), "run_in_sandbox": False,
                       "allowed_serializers": None})
    p.start()
    futures: list[Future] = [p.submit(t, b, None) for t, b in (body(triple, i) for i in range(5))]
    p.shutdown(EngineStopped)
    for f in futures:
        assert f.done()
        if f.exception() is not None:
            assert isinstance(f.exception(), EngineStopped)


# --- cancel ----------------------------------------------------------------------------------
def test_a_waiting_task_cancelled_never_runs(tmp_path: Path) -> None:
    p = new_pool(1, tmp_path)
    p.start()
    try:
        started, release, marker = tmp_path / "started", tmp_path / "release", tmp_path / "victim-ran"
        first = p.submit(*body(touch_then_wait, str(started), str(release)), None)
        tid, b = body(touch, str(marker))
        victim = p.submit(tid, b, None)  # nothing is known of task times yet: it waits here
        assert p.cancel(tid, force=False) == CancelOutcome.DROPPED
        with pytest.raises(TaskCancelled, match="before it started"):
            victim.result(timeout=5)
        release.touch()
        assert value(first.result(timeout=60)) == "released"
        after = p.submit(*body(triple, 5), None)
        assert value(after.result(timeout=60)) == 15
        assert not marker.exists()
        assert p.cancel(tid, force=True) == CancelOutcome.UNKNOWN  # gone from the pool
    finally:
        p.shutdown(EngineStopped)


def test_a_held_task_cancelled_is_skipped_by_its_worker(tmp_path: Path) -> None:
    p = new_pool(1, tmp_path)
    p.start()
    try:
        p._mean_s = 1e-5  # as after many short tasks: the worker is handed a deep batch
        started, release, marker = tmp_path / "started", tmp_path / "release", tmp_path / "victim-ran"
        first = p.submit(*body(touch_then_wait, str(started), str(release)), None)
        tid, b = body(touch, str(marker))
        victim = p.submit(tid, b, None)
        behind = p.submit(*body(triple, 2), None)
        wait_for(started.exists, 60, "the first task to start")
        assert p.cancel(tid, force=False) == CancelOutcome.SKIPPING
        release.touch()
        with pytest.raises(TaskCancelled, match="before it started"):
            victim.result(timeout=60)
        assert value(first.result(timeout=60)) == "released"
        assert value(behind.result(timeout=60)) == 6
        assert not marker.exists()
    finally:
        p.shutdown(EngineStopped)


def test_force_cancel_kills_only_the_running_task(tmp_path: Path) -> None:
    p = new_pool(1, tmp_path)
    p.start()
    try:
        started = tmp_path / "started"
        tid, b = body(touch_then_wait, str(started), str(tmp_path / "never"))
        running = p.submit(tid, b, None)
        behind = [p.submit(*body(triple, i), None) for i in range(5)]
        wait_for(started.exists, 60, "the task to start")
        assert p.cancel(tid, force=False) == CancelOutcome.RUNNING  # left alone without force
        assert not running.done()
        assert p.cancel(tid, force=True) == CancelOutcome.KILLED
        with pytest.raises(TaskCancelled, match="force-cancelled while running"):
            running.result(timeout=60)
        assert [value(f.result(timeout=120)) for f in behind] == [3 * i for i in range(5)]
        assert p.problem is None
    finally:
        p.shutdown(EngineStopped)


# --- adaptive prefetch ----------------------------------------------------------------------
def test_prefetch_deepens_for_short_tasks_and_stays_shallow_for_long_ones() -> None:
    short = AdaptivePrefetch(capacity=2)
    assert short.current == short.floor == 12
    short.finished(3000)  # 3,000 tasks finished in a second
    assert short.update(now=short._since + 1.0) == min(CEILING, 2 + 1500)
    long = AdaptivePrefetch(capacity=2)
    long.finished(1)  # one task a second
    assert long.update(now=long._since + 1.0) is None and long.current == long.floor


def test_prefetch_never_holds_more_than_its_byte_budget() -> None:
    p = AdaptivePrefetch(capacity=2)
    for _ in range(10):
        p.received(4 * 1024 * 1024)  # 4 MiB task bodies
    p.finished(10_000)
    assert p.update(now=p._since + 1.0) == max(p.floor, MAX_HELD_BYTES // (4 * 1024 * 1024))


def test_a_configured_prefetch_is_fixed() -> None:
    p = AdaptivePrefetch(capacity=2, fixed=50)
    p.finished(100_000)
    assert p.update(now=p._since + 1.0) is None
    assert (p.current, p.ceiling, p.adaptive) == (50, 50, False)
