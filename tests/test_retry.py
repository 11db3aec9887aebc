"""Retries, end to end on the real local stack (broker, service on SQLite) and process-pool
endpoints, on both transports: the per-Executor override of the endpoint's
``max_retries_on_system_failure`` (a worker SIGKILLed mid-task), an endpoint SIGKILLed mid-task
(run again, and given up after three such deaths), and the SDK's opt-in ``retry_on``.  Marker files prove what ran."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import endpoint_helpers as eh
from task_functions import die_once
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


def take_endpoint_down(marker_dir: str, times: int, x: int) -> int:
    """SIGKILL the whole endpoint (the agent and its workers: one process group) the first
    ``times`` runs; a marker file per run proves how often it ran."""
    runs = len(os.listdir(marker_dir))
    Path(marker_dir, f"run-{runs}").touch()
    if runs < times:
        os.killpg(os.getpgid(0), signal.SIGKILL)
    return x + 1


def restart_after_death(ep: eh.Running, transport: str) -> eh.Running:
    assert ep.proc.wait(timeout=120) == -signal.SIGKILL, ep.log
    eh.kill_session(ep.proc.pid)  # nothing of it may linger
    return eh.start(ep.name, transport=transport)


@pytest.mark.parametrize("transport", ["native", "python"])
def test_a_task_running_when_its_endpoint_dies_runs_again_then_is_given_up(
        stack: dict[str, Any], tmp_path: Path, transport: str) -> None:
    name = f"ep-death-{transport}"
    eh.configure(name, CONFIG)
    ep = eh.start(name, transport=transport)
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    try:
        with Executor(endpoint_id=ep.endpoint_id, max_retries_on_system_failure=0) as ex:
            # an endpoint that dies loses nothing: even with no retries for lost workers, a
            # task the agent died under runs again
            fut = ex.submit(take_endpoint_down, str(first), 1, 41)
            ep = restart_after_death(ep, transport)
            assert fut.result(timeout=120) == 42
            assert len(os.listdir(first)) == 2
            # but a task that keeps taking its endpoint down is given up after the third death
            fut = ex.submit(take_endpoint_down, str(second), 99, 41)
            dead = []
            for _ in range(3):
                dead.append(ep.proc.pid)
                ep = restart_after_death(ep, transport)
            with pytest.raises(TaskExecutionFailed) as info:
                fut.result(timeout=120)
        assert len(os.listdir(second)) == 3  # not a fourth time
        text = str(info.value)
        assert "lost this task 3 time(s) (max_retries_on_system_failure=0; " in text
        # each attempt names the agent that died under it, in order
        where = [text.find(f"--- attempt {i + 1} ---") for i in range(3)]
        where += [text.find(f"the endpoint agent (pid {pid} ") for pid in dead]
        assert -1 not in where and where[0] < where[3] < where[1] < where[4] < where[2] < where[5], text
        assert "stopped while this task ran" in text
    finally:
        assert eh.stop(ep) == 0, ep.log


def test_executor_override_is_checked_at_once() -> None:
    with pytest.raises(ValueError, match="max_retries_on_system_failure must be an integer from 0 to 10"):
        Executor(max_retries_on_system_failure=11)


def fail_first_time(marker: str, log: str, x: int) -> int:
    with open(log, "a") as f:
        f.write("attempt\n")
    if not os.path.exists(marker):
        Path(marker).touch()
        raise ValueError("flaky input 13")
    return x * 3


def always_raise(log: str, kind: str) -> None:
    with open(log, "a") as f:
        f.write("attempt\n")
    raise {"key": KeyError, "os": FileNotFoundError}[kind](f"user error {kind}")


def test_retry_on_resubmits_a_matching_error_and_returns_the_later_value(endpoint: str, tmp_path: Path) -> None:
    marker, log = tmp_path / "failed-once", tmp_path / "attempts"
    with Executor(endpoint_id=endpoint, retry_on=(ValueError,), max_retries=2) as ex:
        fut = ex.submit(fail_first_time, str(marker), str(log), 5)
        assert fut.result(timeout=120) == 15
    assert log.read_text().count("attempt") == 2
    assert fut.task_id is not None


def test_retry_on_does_not_retry_another_error(endpoint: str, tmp_path: Path) -> None:
    log = tmp_path / "attempts"
    with Executor(endpoint_id=endpoint, retry_on=(ValueError,)) as ex:
        with pytest.raises(TaskExecutionFailed, match="user error key") as info:
            ex.submit(always_raise, str(log), "key").result(timeout=120)
    assert log.read_text().count("attempt") == 1
    assert "--- attempt" not in str(info.value)


def test_retry_on_matches_subclasses_and_lists_every_attempt(endpoint: str, tmp_path: Path) -> None:
    log = tmp_path / "attempts"
    with Executor(endpoint_id=endpoint, retry_on=(OSError,), max_retries=2) as ex:
        with pytest.raises(TaskExecutionFailed) as info:
            ex.submit(always_raise, str(log), "os").result(timeout=120)
    assert log.read_text().count("attempt") == 3  # the first run and two retries
    text = str(info.value)
    assert "failed 3 time(s) (retry_on=(OSError), max_retries=2)" in text
    for n in (1, 2, 3):
        assert f"--- attempt {n} ---" in text
    assert text.count("FileNotFoundError: user error os") == 3


def test_retry_on_is_checked_at_once() -> None:
    with pytest.raises(TypeError, match="retry_on must list exception classes"):
        Executor(retry_on=("ValueError",))
    with pytest.raises(ValueError, match="max_retries must be a non-negative integer"):
        Executor(retry_on=(ValueError,), max_retries=-1)


def test_the_raised_type_is_read_from_the_last_exception_of_a_chain() -> None:
    from volley.sdk.retry import RetryPolicy, raised_type_name

    chained = (
        "Traceback (most recent call last):\n  File \"f.py\", line 2, in f\n    int('x')\n"
        "ValueError: invalid literal\nsecond: line of the message\n\n"
        "During handling of the above exception, another exception occurred:\n\n"
        "Traceback (most recent call last):\n  File \"f.py\", line 4, in f\n    raise E()\n"
        "json.decoder.JSONDecodeError: Expecting value: line 1 column 1 (char 0)\n"
    )
    assert raised_type_name(chained) == "json.decoder.JSONDecodeError"
    assert RetryPolicy((ValueError,), 1).matches(chained)  # an imported subclass of ValueError
    assert not RetryPolicy((KeyError,), 1).matches(chained)
    assert RetryPolicy((ValueError,), 1).matches("ValueError: no traceback at all")
    unknown = "Traceback (most recent call last):\n  File \"x\", line 1\nremote_only.Boom: x\n"
    assert not RetryPolicy((Exception,), 1).matches(unknown)  # not importable here: by name only
