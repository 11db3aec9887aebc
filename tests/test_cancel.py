"""Cancelling submitted tasks and retrying tasks lost to the infrastructure, end to end: the
real local stack (broker, service on SQLite) and a process-pool endpoint with one worker, on
both transports.  Marker files prove what ran."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import endpoint_helpers as eh
from task_functions import die_once, touch, touch_then_wait
from volley import Client, Executor
from volley.errors import TaskExecutionFailed

CONFIG = """\
engine: {type: ProcessPoolEngine, max_workers: 1, max_retries_on_system_failure: 1}
heartbeat_period: 1
"""


@pytest.fixture(scope="module", params=["native", "python"])
def endpoint(request: pytest.FixtureRequest, stack: dict[str, Any]) -> Iterator[str]:
    name = f"ep-cancel-{request.param}"
    eh.configure(name, CONFIG)
    ep = eh.start(name, transport=request.param)
    try:
        client = Client()
        # the service learns from the first status report whether the engine can force-cancel
        eh.wait_for(lambda: client.get_endpoint_status(ep.endpoint_id).get("status") == "online", 60,
                    "the endpoint's first status report")
        yield ep.endpoint_id
    finally:
        assert eh.stop(ep) == 0, ep.log


def double(x: int) -> int:
    return 2 * x


def count_and_raise(log: str) -> None:
    with open(log, "a") as f:
        f.write("attempt\n")
    raise ValueError("user error 7")


def test_a_queued_task_cancelled_never_runs(endpoint: str, tmp_path: Path) -> None:
    started, release, marker = tmp_path / "started", tmp_path / "release", tmp_path / "victim-ran"
    with Executor(endpoint_id=endpoint) as ex:
        busy = ex.submit(touch_then_wait, str(started), str(release))
        eh.wait_for(started.exists, 60, "the first task to start")
        victim = ex.submit(touch, str(marker))
        eh.wait_for(lambda: victim.task_id, 30, "the victim's task id")
        assert victim.cancel() is True
        assert victim.cancelled()
        release.touch()
        assert busy.result(timeout=60) == "released"
        assert ex.submit(double, 4).result(timeout=60) == 8  # the endpoint went on past it
    assert not marker.exists()
    assert Client().get_task(victim.task_id)["status"] == "cancelled"


def test_a_running_task_is_left_alone_by_cancel_and_stopped_by_force(endpoint: str, tmp_path: Path) -> None:
    started = tmp_path / "started"
    with Executor(endpoint_id=endpoint) as ex:
        running = ex.submit(touch_then_wait, str(started), str(tmp_path / "never"))
        eh.wait_for(started.exists, 60, "the task to start")
        assert running.cancel() is False  # concurrent.futures: a running task is not cancelled
        assert not running.done()
        assert ex.cancel_running(running) is True
        assert running.cancelled()
        assert ex.submit(double, 5).result(timeout=60) == 10  # a new worker took over
    doc = Client()._api.get(f"/v2/tasks/{running.task_id}")
    assert doc["status"] == "cancelled"
    assert "TaskCancelled" in doc["exception"] and "force-cancelled while running" in doc["exception"]


def test_a_worker_killed_mid_task_is_retried(endpoint: str, tmp_path: Path) -> None:
    marker = tmp_path / "died-once"
    with Executor(endpoint_id=endpoint) as ex:
        assert ex.submit(die_once, str(marker), 41).result(timeout=120) == 42
    assert marker.exists()  # the first attempt did die


def test_a_user_error_is_not_retried(endpoint: str, tmp_path: Path) -> None:
    log = tmp_path / "attempts"
    with Executor(endpoint_id=endpoint) as ex:
        with pytest.raises(TaskExecutionFailed, match="user error 7"):
            ex.submit(count_and_raise, str(log)).result(timeout=60)
    assert log.read_text().count("attempt") == 1
