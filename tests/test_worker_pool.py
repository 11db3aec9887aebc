"""The process engine's worker pool (real spawned processes) and the endpoint's adaptive
prefetch rule."""

from __future__ import annotations

import os
import signal
import uuid
from concurrent.futures import Future, wait

import pytest

from volley.endpoint.engines.base import EngineStopped
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


@pytest.fixture()
def pool(tmp_path: object) -> WorkerPool:
    p = WorkerPool(2, {"endpoint_id": None, "run_dir": str(tmp_path), "run_in_sandbox": False,
                       "allowed_serializers": None})
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
