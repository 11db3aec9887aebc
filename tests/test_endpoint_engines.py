"""The execution contract on every engine: thread pool, process pool (the stack's default
endpoint) and Parsl HighThroughputExecutor with a real LocalProvider (interchange, manager,
workers).  The Parsl endpoint is started once for the module."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

import endpoint_helpers as eh
from volley import Executor, ShellFunction
from volley.config import load_client_config
from volley.demo import EXAMPLES, example_env, find_examples, run_example
from volley.errors import TaskExecutionFailed
from volley.serialize import DillDataBase64, JSONData

DIR = find_examples(Path(__file__).resolve().parents[1] / "docs" / "examples")

THREAD_CONFIG = """\
engine: {type: ThreadPoolEngine, max_workers: 2}
heartbeat_period: 1
"""
HTEX_CONFIG = """\
engine:
  type: GlobusComputeEngine        # upstream's name for HighThroughputEngine
  max_workers_per_node: 2
  run_in_sandbox: true             # where the guide puts it
  max_retries_on_system_failure: 1
  heartbeat_period: 2              # Parsl's manager heartbeats
  heartbeat_threshold: 20
  job_status_kwargs: {strategy_period: 1}
  provider:
    type: LocalProvider
    init_blocks: 1
    min_blocks: 0
    max_blocks: 1
heartbeat_period: 1
"""


@pytest.fixture(scope="module")
def engines(stack: dict[str, Any]) -> Iterator[dict[str, str]]:
    eh.configure("ep-thread", THREAD_CONFIG)
    eh.configure("ep-htex", HTEX_CONFIG)
    started = []
    try:
        for name in ("ep-thread", "ep-htex"):
            started.append(eh.start(name))
        ids = {"process": stack["endpoint_id"], "thread": started[0].endpoint_id, "htex": started[1].endpoint_id}
        ids["htex_dir"] = str(started[1].dir)
        yield ids
    finally:
        for ep in started:
            assert eh.stop(ep) == 0, ep.log


def double(x: int) -> int:
    return 2 * x


def raises() -> None:
    raise ValueError("remote failure 42")


def big_result() -> str:
    return "x" * (10 * 1024 * 1024 + 1)


def json_value() -> dict[str, list[int]]:
    return {"a": [1, 2]}


def generator_result() -> Any:
    return (i for i in range(3))  # neither JSON nor dill can serialize a generator


def kill_own_worker() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def environment() -> dict[str, str | None]:
    return {"cwd": os.getcwd(), "uuid": os.environ.get("GC_TASK_UUID"),
            "sandbox": os.environ.get("GC_TASK_SANDBOX_DIR")}


# --- the guide's examples, on the engines the default endpoint does not cover -------------------
REMOTE_EXAMPLES = [e for e in EXAMPLES if e.endpoint == "default"]


@pytest.mark.parametrize("engine", ["thread", "htex"])
@pytest.mark.parametrize("example", REMOTE_EXAMPLES, ids=lambda e: e.script.removesuffix(".py"))
def test_guide_example_on_engine(engines: dict[str, str], stack: dict[str, Any], example: Any, engine: str) -> None:
    from test_guide_examples import EXPECT

    env = dict(example_env(stack), VOLLEY_ENDPOINT_ID=engines[engine])
    outcome = run_example(example, DIR, env, timeout=180)
    assert outcome.ok, f"{example.script} on {engine}: {outcome.error}\n{outcome.output}"
    for text in EXPECT[example.script]:
        assert text in outcome.output, f"{example.script} on {engine} did not print {text!r}:\n{outcome.output}"


# --- execution contract ------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ["thread", "process", "htex"])
def test_function_and_remote_traceback(engines: dict[str, str], engine: str) -> None:
    with Executor(endpoint_id=engines[engine]) as ex:
        ok, bad = ex.submit(double, 21), ex.submit(raises)
        assert ok.result(timeout=60) == 42
        with pytest.raises(TaskExecutionFailed) as info:
            bad.result(timeout=60)
    text = str(info.value)
    assert "ValueError: remote failure 42" in text
    assert "in raises" in text  # the remote traceback names the user's function


@pytest.mark.parametrize("engine", ["thread", "process", "htex"])
def test_shell_walltime_gives_124(engines: dict[str, str], engine: str) -> None:
    with Executor(endpoint_id=engines[engine]) as ex:
        res = ex.submit(ShellFunction("sleep 5", walltime=0.5)).result(timeout=60)
    assert res.returncode == 124
    assert res.exception_name == "subprocess.TimeoutExpired"


def test_sandbox_directories_per_task(engines: dict[str, str]) -> None:
    run_dir = Path(engines["htex_dir"]) / "tasks_working_dir"
    with Executor(endpoint_id=engines["htex"]) as ex:
        futs = [ex.submit(ShellFunction("echo made > here.txt; pwd; echo $GC_TASK_UUID; echo $GC_TASK_SANDBOX_DIR"))
                for _ in range(2)]
        env_fut = ex.submit(environment)
        outcomes = [f.result(timeout=60) for f in futs]
        results = [(f.task_id, res) for f, res in zip(futs, outcomes, strict=True)]  # ids known once done
        env = env_fut.result(timeout=60)
    for task_id, res in results:
        assert res.returncode == 0, res.stderr
        sandbox = run_dir / str(task_id)
        assert res.stdout.split() == [str(sandbox), str(task_id), str(sandbox)]
        assert (sandbox / "here.txt").read_text() == "made\n"
        assert "WARNING: Task sandboxing" not in res.stderr
    assert env["uuid"] == str(env_fut.task_id)
    assert env["sandbox"] == env["cwd"] == str(run_dir / str(env_fut.task_id))


def test_without_sandbox_tasks_share_the_working_dir(engines: dict[str, str], stack: dict[str, Any]) -> None:
    with Executor(endpoint_id=engines["process"]) as ex:
        fut = ex.submit(environment)
        shell = ex.submit(ShellFunction("pwd")).result(timeout=60)
        env = fut.result(timeout=60)
        assert fut.task_id is not None
    run_dir = Path(stack["state_dir"]) / "endpoints" / "default" / "tasks_working_dir"
    assert env == {"cwd": str(run_dir), "uuid": str(fut.task_id), "sandbox": None}
    assert shell.stdout.strip() == str(run_dir)
    assert "WARNING: Task sandboxing will not work" in shell.stderr


def _raw_result(task_id: str) -> str:
    cfg = load_client_config()
    r = requests.get(f"{cfg.service_url}/v2/tasks/{task_id}", headers={"Authorization": f"Bearer {cfg.token}"}, timeout=10)
    r.raise_for_status()
    return str(r.json()["result"])


@pytest.mark.parametrize("engine", ["thread", "htex"])
def test_result_serializers_json(engines: dict[str, str], engine: str) -> None:
    with Executor(endpoint_id=engines[engine], result_serializers=[JSONData()]) as ex:
        fut = ex.submit(json_value)
        assert fut.result(timeout=60) == {"a": [1, 2]}
    assert _raw_result(str(fut.task_id)) == '11\n{"a": [1, 2]}'  # JSON on the wire, not dill


def test_result_serializers_all_fail_reports_each(engines: dict[str, str]) -> None:
    with Executor(endpoint_id=engines["htex"], result_serializers=[JSONData(), DillDataBase64()]) as ex:
        with pytest.raises(TaskExecutionFailed) as info:
            ex.submit(generator_result).result(timeout=60)
    text = str(info.value)
    assert "All strategies failed" in text
    assert "not JSON serializable" in text  # JSONData's failure
    assert "generator" in text and "pickle" in text  # dill's failure


@pytest.mark.parametrize("engine", ["process", "htex"])
def test_oversize_result_is_refused(engines: dict[str, str], engine: str) -> None:
    with Executor(endpoint_id=engines[engine]) as ex:
        with pytest.raises(TaskExecutionFailed) as info:
            ex.submit(big_result).result(timeout=60)
    text = str(info.value)
    assert "MaxResultSizeExceeded(" in text and ", 10485760)" in text


@pytest.mark.parametrize("engine", ["thread", "process", "htex"])
def test_resource_specification_refused_on_non_mpi_engines(engines: dict[str, str], engine: str) -> None:
    with Executor(endpoint_id=engines[engine]) as ex:
        ex.resource_specification = {"num_nodes": 1}
        with pytest.raises(TaskExecutionFailed) as info:
            ex.submit(double, 1).result(timeout=60)
    assert "Invalid" in str(info.value) or "not supported" in str(info.value)
    assert "MPIEngine" in str(info.value)


def test_lost_parsl_worker_is_retried_then_reported(engines: dict[str, str]) -> None:
    with Executor(endpoint_id=engines["htex"]) as ex:
        with pytest.raises(TaskExecutionFailed) as info:
            ex.submit(kill_own_worker).result(timeout=120)
        assert ex.submit(double, 5).result(timeout=60) == 10  # Parsl replaced the worker
    text = str(info.value)
    assert "WorkerLost" in text
    assert "lost this task 2 time(s)" in text  # max_retries_on_system_failure: 1


def test_lost_process_pool_worker_is_reported(engines: dict[str, str]) -> None:
    with Executor(endpoint_id=engines["process"]) as ex:
        with pytest.raises(TaskExecutionFailed) as info:
            ex.submit(kill_own_worker).result(timeout=60)
        assert ex.submit(double, 6).result(timeout=60) == 12  # a new pool took over
    assert "loss of a worker process" in str(info.value)


def test_heartbeat_reports_workers_and_queue_depth(engines: dict[str, str]) -> None:
    from volley.sdk.client import Client

    client = Client()

    def report() -> dict[str, Any] | None:
        status = client.get_endpoint_status(engines["htex"])
        details = status.get("details") or {}
        return details if status["status"] == "online" and details.get("total_workers") else None

    details = eh.wait_for(report, 60, "a heartbeat with the Parsl workers")
    assert details["engine_type"] == "HighThroughputEngine"
    assert details["total_workers"] == 2
    assert details["provider_type"] == "LocalProvider"
    assert details["queue_depth"] == 0
    assert details["consuming"] is True
    assert {"idle_workers", "outstanding_tasks", "tasks_held", "unpublished_results"} <= set(details)
