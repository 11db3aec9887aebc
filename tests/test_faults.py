"""The short fault suite (issue 11): a few hundred tasks per fault, one fault of each kind --
endpoint, service and broker SIGKILLed and restarted, the broker kept down a few seconds, a
client SIGKILLed and its task group reloaded -- on both transports, against a private stack of
its own (it kills the broker, so never the session's shared ``stack``).  ``make faults`` runs the
same harness with 20,000 tasks per fault and writes docs/reliability.md.

Re-executions are allowed (execution is at-least-once) and reported; lost, wrong, hung and
twice-surfaced futures fail the test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import InvalidStateError
from pathlib import Path

import pytest

from faults import harness, tasks
from volley.sdk.future import ComputeFuture


@pytest.mark.stack
@pytest.mark.timeout(900)  # a broken system makes every phase wait out its deadline
@pytest.mark.parametrize("transport", ["native", "python"])
def test_every_future_resolves_once_through_every_fault(transport: str, tmp_path: Path) -> None:
    settings = harness.Settings.short(transports=(transport,), workdir=tmp_path)
    suite = harness.run_suite(settings)
    report = harness.format_report(suite)
    print(report)
    assert [p.fault for p in suite.phases] == list(harness.FAULTS), report
    for p in suite.phases:
        assert not p.aborted, report
        assert (p.lost, p.wrong, p.hung, p.surfaced_twice) == (0, 0, 0, 0), report
        assert p.right == p.tasks, report
    # every task ran (the records are written by the task itself, on the endpoint)
    assert sum(p.never_executed for p in suite.phases) == 0, report


# --- the harness's own detectors, on real futures and a real record file -----------------------
def test_a_second_resolution_of_a_future_is_counted() -> None:
    tracker = harness.Tracker(2)
    first, second = ComputeFuture("t-1"), ComputeFuture()  # second: not sent, so cancel() is local
    tracker.add(0, first)
    tracker.add(1, second)
    first.set_result(tasks.expected(0))
    with pytest.raises(InvalidStateError):  # the probe delegates: the real error still happens
        first.set_result(tasks.expected(0))
    second.cancel()
    with pytest.raises(InvalidStateError):  # a result for a cancelled future is not a duplicate
        second.set_result(tasks.expected(1))
    assert tracker.twice == 1
    assert tracker.all_done.is_set()


def test_classification_sees_wrong_errored_hung_and_duplicate_ids(tmp_path: Path) -> None:
    records = tmp_path / "records"
    for i in (0, 1, 1, 2):  # task 1 ran twice, task 3 never
        tasks.record(str(records), i)
    tracker = harness.Tracker(4)
    futures = [ComputeFuture(tid) for tid in ("a", "b", "b", "d")]  # "b" handed out twice
    for i, f in enumerate(futures):
        tracker.add(i, f)
    futures[0].set_result(tasks.expected(0))
    futures[1].set_result(tasks.expected(2))  # another task's result
    futures[2].set_exception(ConnectionError("gone"))
    # futures[3] stays pending, as a hung one is at the deadline
    res = harness.PhaseResult("native", "broker", 4)
    harness._classify(res, tracker, harness.Records(records))
    assert (res.right, res.wrong, res.hung) == (1, 1, 1)
    assert res.errored == {"ConnectionError": 1}
    assert res.surfaced_twice == 1
    assert (res.executed_more_than_once, res.extra_executions, res.never_executed) == (1, 1, 1)
    assert not res.ok


def test_the_task_records_each_execution_atomically(tmp_path: Path) -> None:
    path = tmp_path / "records"
    code = (f"import importlib; record = importlib.import_module({tasks.__name__!r}).record\n"
            f"for i in range(500): record({str(path)!r}, i)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(harness.TASKS_ROOT), os.environ.get("PYTHONPATH")) if p)}
    writers = [subprocess.Popen([sys.executable, "-c", code], env=env) for _ in range(4)]
    assert [w.wait(timeout=120) for w in writers] == [0] * 4
    rec = harness.Records(path)
    assert rec.refresh() == 2000
    assert set(rec.counts.values()) == {4}
