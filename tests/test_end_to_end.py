"""One task end to end through HTTP and AMQPS, on each transport."""

from __future__ import annotations

import uuid

import pytest

from volley import Executor
from volley.sdk.watcher import all_watchers


def double(x: int) -> int:
    return x * 2


def boom() -> None:
    raise ZeroDivisionError("remote failure")


@pytest.mark.parametrize("transport", ["native", "python"])
def test_submit_double(endpoint_id: str, transport: str) -> None:
    if transport == "native":
        import volley._core  # noqa: F401  (the native transport must really be there, not a fallback)
    tg = uuid.uuid4()
    with Executor(endpoint_id=endpoint_id, task_group_id=tg, transport=transport) as ex:
        assert ex.transport == transport
        fut = ex.submit(double, 7)
        assert fut.result(timeout=60) == 14
        assert fut.task_id is not None
        watcher = next(w for w in all_watchers() if w.task_group_id == str(tg))
        expected = "volley._core" if transport == "native" else "volley.transport.pika_transport"
        assert watcher._loop is not None
        assert type(watcher._loop.consumer).__module__ == expected


@pytest.mark.parametrize("transport", ["native", "python"])
def test_remote_exception_carries_traceback(endpoint_id: str, transport: str) -> None:
    from volley.errors import TaskExecutionFailed

    with Executor(endpoint_id=endpoint_id, task_group_id=uuid.uuid4(), transport=transport) as ex:
        fut = ex.submit(boom)
        with pytest.raises(TaskExecutionFailed) as info:
            fut.result(timeout=60)
    assert "ZeroDivisionError: remote failure" in str(info.value)


@pytest.mark.parametrize("transport", ["native", "python"])
def test_many_tasks_resolve_in_any_order(endpoint_id: str, transport: str) -> None:
    with Executor(endpoint_id=endpoint_id, task_group_id=uuid.uuid4(), transport=transport,
                  batch_size=16) as ex:
        futs = {ex.submit(double, i): i for i in range(200)}
        results = {futs[f]: f.result(timeout=120) for f in futs}
    assert results == {i: 2 * i for i in range(200)}
    assert ex.task_count_submitted == 200


def test_unknown_transport_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown transport 'carrier-pigeon'"):
        Executor(endpoint_id=uuid.uuid4(), transport="carrier-pigeon")
