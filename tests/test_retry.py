"""Retries, end to end on the real local stack (broker, service on SQLite) and process-pool
endpoints, on both transports: the per-Executor override of the endpoint's
``max_retries_on_system_failure`` (a worker SIGKILLed mid-task), an endpoint SIGKILLed mid-task
counting as an attempt, and the SDK's opt-in ``retry_on``.  Marker files prove what ran."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import endpoint_helpers as eh
from volley import Executor
from volley.errors import TaskExecutionFailed

# the endpoint's own setting is upstream's default, 0: what a retry here comes from is the override
CONFIG = """\
engine: {type: ProcessPoolEngine, max_workers: 1}
heartbeat_period: 1
"""


@pytest.fixture(scope="module", params=["native", "python"])
def endpoint(request: pytest.FixtureRequest, stack: dict[str, Any]) -> Iterator[str]:
    name = f"ep-retry-{request.param}"
    eh.configure(name, CONFIG)
    ep = eh.start(name, transport=request.param)
    try:
        yield ep.endpoint_id
    finally:
        assert eh.stop(ep) == 0, ep.log


def die_once(marker: str, x: int) -> int:
    if not os.path.exists(marker):
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return x + 1


def test_executor_override_retries_a_killed_worker(endpoint: str, tmp_path: Path) -> None:
    marker = tmp_path / "died-once"
    with Executor(endpoint_id=endpoint, max_retries_on_system_failure=1) as ex:
        assert ex.max_retries_on_system_failure == 1
        assert ex.submit(die_once, str(marker), 41).result(timeout=120) == 42
    assert marker.exists()  # the first attempt did die


def test_executor_override_zero_reports_the_cause(endpoint: str, tmp_path: Path) -> None:
    marker = tmp_path / "died-once"
    with Executor(endpoint_id=endpoint, max_retries_on_system_failure=0) as ex:
        with pytest.raises(TaskExecutionFailed) as info:
            ex.submit(die_once, str(marker), 41).result(timeout=120)
    text = str(info.value)
    assert "lost this task 1 time(s) (max_retries_on_system_failure=0)" in text
    assert "--- attempt 1 ---" in text and "WorkerLost" in text
    assert marker.exists()


def test_executor_override_is_checked_at_once() -> None:
    with pytest.raises(ValueError, match="max_retries_on_system_failure must be an integer from 0 to 10"):
        Executor(max_retries_on_system_failure=11)
