"""``cancel()`` answers at once from what the service says, without waiting for the endpoint,
and an ``Executor.map`` given up early cancels the rest the same way; the endpoint then drops
the tasks.  The endpoint is stopped while the futures are cancelled, so no answer of its can
have come; marker files prove nothing ran once it is back."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import endpoint_helpers as eh
from task_functions import touch
from test_cancel_durable import ONE_AT_A_TIME, _all_cancelled, _wait_queued, double
from volley import Client, Executor


@pytest.fixture()
def stopped_endpoint(stack: dict[str, Any]) -> Iterator[tuple[eh.Running, dict[str, Any]]]:
    """A registered endpoint that is not running: nothing can answer for it until it starts."""
    name = f"ep-cancel-stopped-{uuid.uuid4().hex[:6]}"
    eh.configure(name, ONE_AT_A_TIME)
    ep = eh.start(name)
    assert eh.stop(ep) == 0
    eh.wait_for(lambda: Client().get_endpoint_status(ep.endpoint_id)["status"] == "offline", 60,
                "the endpoint to be offline")
    yield ep, stack


def _restart_and_drain(ep: eh.Running) -> None:
    ep = eh.start(ep.name)
    try:
        with Executor(endpoint_id=ep.endpoint_id) as ex:
            assert ex.submit(double, 21).result(timeout=120) == 42
    finally:
        assert eh.stop(ep) == 0, ep.log


def test_cancel_answers_without_waiting_for_the_endpoint(stopped_endpoint: tuple[eh.Running, dict[str, Any]],
                                                         tmp_path: Path) -> None:
    ep, stack = stopped_endpoint
    markers = [tmp_path / f"ran-{i}" for i in range(5)]
    with Executor(endpoint_id=ep.endpoint_id) as ex:
        futs = [ex.submit(touch, str(m)) for m in markers]
        eh.wait_for(lambda: all(f.task_id for f in futs), 60, "the tasks to be accepted")
        _wait_queued(stack, ep.endpoint_id, 5)  # out of the service's outbox: only the endpoint can drop them
        # the endpoint is stopped: whatever cancel() says comes from the service alone
        assert [f.cancel() for f in futs] == [True] * 5
        assert all(f.cancelled() for f in futs)
    _restart_and_drain(ep)
    assert not any(m.exists() for m in markers)
    assert _all_cancelled(Client(), [str(f.task_id) for f in futs])


def test_map_abandoned_cancels_the_rest_at_once(stopped_endpoint: tuple[eh.Running, dict[str, Any]],
                                                 tmp_path: Path) -> None:
    ep, _ = stopped_endpoint
    markers = [tmp_path / f"ran-{i}" for i in range(4)]
    with Executor(endpoint_id=ep.endpoint_id) as ex:
        submitted: list[Any] = []
        submit = ex.submit
        ex.submit = lambda *a, **k: submitted.append(submit(*a, **k)) or submitted[-1]  # type: ignore[method-assign]
        results = ex.map(touch, [str(m) for m in markers], timeout=3.0)
        with pytest.raises(TimeoutError):
            next(results)
        # the map gave up: before its TimeoutError reached us every task of it was cancelled,
        # with no answer from the (stopped) endpoint
        assert len(submitted) == 4 and all(f.task_id and f.cancelled() for f in submitted)
    _restart_and_drain(ep)
    assert not any(m.exists() for m in markers)
