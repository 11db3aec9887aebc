"""Endpoint lifecycle and no lost work: the CLI, single instance, SIGKILL with tasks in flight,
results kept on disk while the broker refuses them, and poison task messages."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from click.testing import CliRunner

import endpoint_helpers as eh
from volley import Executor
from volley.endpoint.cli import endpoint as endpoint_cli
from volley.errors import TaskExecutionFailed
from volley.protocol import topology as topo
from volley.sdk.client import Client
from volley.transport import open_consumer, open_publisher

FAST = "heartbeat_period: 1\nshutdown_grace: 1\n"


def slow_task(i: int, marker_dir: str, seconds: float) -> int:
    import time as _time

    Path(marker_dir, f"{i}.{os.getpid()}.{_time.monotonic_ns()}").touch()
    _time.sleep(seconds)
    return i * 10


def double(x: int) -> int:
    return 2 * x


def _admin_url(stack: dict[str, Any]) -> str:
    from volley.local.broker import BrokerInfo

    info = json.loads((Path(stack["state_dir"]) / "broker" / "broker.json").read_text())
    return str(BrokerInfo(**info).url())


def _cli(*args: str) -> Any:
    return CliRunner().invoke(endpoint_cli, list(args), catch_exceptions=False)


# --- CLI --------------------------------------------------------------------------------------------
def test_cli_configure_start_list_status_stop_restart_delete(stack: dict[str, Any]) -> None:
    r = _cli("configure", "ep-cli", "--engine", "ThreadPoolEngine", "--max-workers", "1", "--heartbeat-period", "1")
    assert r.exit_code == 0, r.output
    assert _cli("configure", "ep-cli").exit_code != 0  # refuses to overwrite
    rows = {e["name"]: e for e in json.loads(_cli("list", "--json").output)}
    assert rows["ep-cli"] == {"id": None, "name": "ep-cli", "state": "Initialized"}

    r = _cli("start", "ep-cli", "--detach")
    assert r.exit_code == 0, r.output
    d = eh.home() / "endpoints" / "ep-cli"
    pid = int((d / "daemon.pid").read_text())
    try:
        rows = {e["name"]: e for e in json.loads(_cli("list", "--json").output)}
        assert rows["ep-cli"]["state"] == "Running" and rows["ep-cli"]["id"]
        status = eh.wait_for(
            lambda: (s := json.loads(_cli("status", "ep-cli", "--json").output))["service_status"] == "online" and s,
            30, "the service to see ep-cli online")
        assert status["pid"] == pid and status["details"]["engine_type"] == "ThreadPoolEngine"

        again = _cli("start", "ep-cli", "--detach")
        assert again.exit_code != 0 and "already running" in again.output
        second = subprocess.run([sys.executable, "-m", "volley.endpoint", "ep-cli"], capture_output=True,
                                text=True, timeout=60)
        assert second.returncode == 3 and "already running" in second.stderr

        with Executor(endpoint_id=rows["ep-cli"]["id"]) as ex:
            assert ex.submit(double, 4).result(timeout=60) == 8

        assert "restarted" in _cli("restart", "ep-cli").output
        new_pid = int((d / "daemon.pid").read_text())
        assert new_pid != pid
        assert "stopped" in _cli("stop", "ep-cli").output
        assert "not running" in _cli("stop", "ep-cli").output
        rows = {e["name"]: e for e in json.loads(_cli("list", "--json").output)}
        assert rows["ep-cli"]["state"] == "Stopped"
        assert not eh.session_members(new_pid)
    finally:
        _cli("stop", "ep-cli")
    eid = rows["ep-cli"]["id"]
    assert _cli("delete", "ep-cli", "--yes").exit_code == 0
    assert "ep-cli" not in {e["name"] for e in json.loads(_cli("list", "--json").output)}
    with pytest.raises(Exception, match="404"):
        Client().get_endpoint_status(eid)


def test_bad_config_fails_at_start_with_key_and_reason(stack: dict[str, Any]) -> None:
    eh.configure("ep-badcfg", "engine:\n  type: HighThroughputEngine\n  provider:\n    type: LocalProvider\n    max_blocks: many\n")
    r = CliRunner().invoke(endpoint_cli, ["start", "ep-badcfg"])
    assert r.exit_code != 0
    assert "engine.provider" in r.output and "max_blocks" in r.output
    eh.configure("ep-badcfg", "engine: {type: ThreadPoolEngine}\nheartbeat_periodd: 3\n")
    run = subprocess.run([sys.executable, "-m", "volley.endpoint", "ep-badcfg"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "unknown key 'heartbeat_periodd'" in run.stderr
    assert not (eh.home() / "endpoints" / "ep-badcfg" / "endpoint.json").exists()  # nothing registered


def test_second_instance_elsewhere_is_refused(stack: dict[str, Any]) -> None:
    eh.configure("ep-held", "engine: {type: ThreadPoolEngine, max_workers: 1}\n" + FAST)
    ep = eh.start("ep-held")
    eid = ep.endpoint_id
    assert eh.stop(ep) == 0
    client = Client()
    info = client.register_endpoint("ep-held", endpoint_id=eid)["task_queue_info"]
    # another machine's instance holds the queue (upstream's zombie consumer)
    holder = open_consumer(info["connection_url"], info["queue"], exclusive=True, ca_file=client.ca_file)
    try:
        run = subprocess.run([sys.executable, "-m", "volley.endpoint", "ep-held"], capture_output=True, text=True, timeout=120)
    finally:
        holder.close()
    assert run.returncode == 4, run.stderr
    assert "held by another consumer" in run.stderr and "second instance" in run.stderr
    ep = eh.start("ep-held")  # once the other one is gone, it starts
    with Executor(endpoint_id=eid) as ex:
        assert ex.submit(double, 2).result(timeout=60) == 4
    assert eh.stop(ep) == 0


# --- no lost work -----------------------------------------------------------------------------------
KILL_CONFIGS = {
    "process": "engine: {type: ProcessPoolEngine, max_workers: 2}\n",
    "htex": """\
engine:
  type: HighThroughputEngine
  max_workers_per_node: 2
  heartbeat_period: 2
  heartbeat_threshold: 10
  job_status_kwargs: {strategy_period: 1}
  provider: {type: LocalProvider, init_blocks: 1, min_blocks: 0, max_blocks: 1}
""",
}


def _interchanges(sid: int) -> list[int]:
    return [p for p in eh.session_members(sid) if "interchange" in eh._cmdline(p)]


@pytest.mark.parametrize("engine", ["process", "htex"])
def test_sigkill_with_tasks_in_flight_then_restart(stack: dict[str, Any], tmp_path: Path, engine: str) -> None:
    name = f"ep-kill-{engine}"
    eh.configure(name, KILL_CONFIGS[engine] + FAST)
    ep = eh.start(name)
    markers = tmp_path / "markers"
    markers.mkdir()
    with Executor(endpoint_id=ep.endpoint_id) as ex:
        futs = [ex.submit(slow_task, i, str(markers), 2.0) for i in range(4)]
        eh.wait_for(lambda: len(list(markers.iterdir())) >= 2, 60, "two tasks to start running")
        if engine == "htex":
            # the agent alone dies: its interchange must not outlive it (PR_SET_PDEATHSIG)
            assert _interchanges(ep.proc.pid)
            os.kill(ep.proc.pid, signal.SIGKILL)
            eh.wait_for(lambda: not _interchanges(ep.proc.pid), 15, "the orphaned interchange to exit")
        eh.kill_session(ep.proc.pid)  # the rest, as if the node had died
        ep.proc.wait()
        assert not any(f.done() for f in futs)  # nothing came back from the killed run
        ep = eh.start(name)
        try:
            assert [f.result(timeout=120) for f in futs] == [i * 10 for i in range(4)]
        finally:
            assert eh.stop(ep) == 0
    ran = [m.name.split(".")[0] for m in markers.iterdir()]
    assert set(ran) == {str(i) for i in range(4)}
    assert len(ran) > 4  # the tasks that were in flight ran again


def test_unpublishable_results_are_kept_and_resent_after_restart(stack: dict[str, Any], tmp_path: Path) -> None:
    eh.configure("ep-store", "engine: {type: ThreadPoolEngine, max_workers: 2}\n" + FAST)
    ep = eh.start("ep-store")
    store = ep.dir / "unacked_results"
    markers = tmp_path / "markers"
    markers.mkdir()
    conn = pika.BlockingConnection(_pika_params(_admin_url(stack)))
    ch = conn.channel()
    # the broker now refuses every result (unroutable + mandatory): a real outage of the route
    ch.queue_unbind(topo.RESULTS_QUEUE, topo.RESULTS_EXCHANGE, "*.results")
    try:
        with Executor(endpoint_id=ep.endpoint_id) as ex:
            futs = [ex.submit(slow_task, i, str(markers), 0.0) for i in range(2)]
            eh.wait_for(lambda: len(list(store.glob("*-*"))) == 2, 60, "two results kept on disk")
            assert eh.stop(ep) == 0  # stopped while the results are still unpublished
            assert len(list(store.glob("*-*"))) == 2
            ch.queue_bind(topo.RESULTS_QUEUE, topo.RESULTS_EXCHANGE, "*.results")
            ep = eh.start("ep-store")
            assert [f.result(timeout=60) for f in futs] == [0, 10]
        eh.wait_for(lambda: not list(store.iterdir()), 30, "the stored results to be deleted once confirmed")
        assert len(list(markers.iterdir())) == 2  # redelivered tasks were not run again
    finally:
        ch.queue_bind(topo.RESULTS_QUEUE, topo.RESULTS_EXCHANGE, "*.results")
        conn.close()
        assert eh.stop(ep) == 0


def _pika_params(url: str) -> pika.URLParameters:
    import ssl

    params = pika.URLParameters(url)
    ctx = ssl.create_default_context(cafile=Client().ca_file)
    params.ssl_options = pika.SSLOptions(ctx, server_hostname=params.host)
    return params


# --- poison task messages ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def poison_endpoint(stack: dict[str, Any]) -> Iterator[dict[str, Any]]:
    eh.configure("ep-poison", "engine: {type: ThreadPoolEngine, max_workers: 1}\n" + FAST)
    ep = eh.start("ep-poison")
    eid = ep.endpoint_id
    assert eh.stop(ep) == 0
    yield {"id": eid, "url": _admin_url(stack)}


def _rewrite_queued_task(url: str, eid: str, change: dict[str, Any]) -> None:
    """Take the one task queued for the stopped endpoint and put it back with other headers."""
    queue = topo.task_queue(eid)
    ca = Client().ca_file
    consumer = open_consumer(url, queue, ca_file=ca, prefetch=1)
    try:
        batch = eh.wait_for(lambda: consumer.next_batch(1, timeout=1), 30, "the queued task")
        d = batch[0]
        headers = {k: v for k, v in d.headers.items() if k not in change}
        headers.update({k: v for k, v in change.items() if v is not None})
        publisher = open_publisher(url, ca_file=ca)
        assert publisher.publish(topo.TASKS_EXCHANGE, queue, d.body, headers=headers, mandatory=True) == "ack"
        publisher.close()
        consumer.ack(d.tag)
    finally:
        consumer.close()


@pytest.mark.parametrize(("change", "message"), [
    ({"function_uuid": None}, "missing header 'function_uuid'"),
    ({"task_uuid": None}, "missing header 'task_uuid'"),
    ({"resource_specification": "{not json"}, "header 'resource_specification' is not JSON"),
    # nested past Python's recursion limit: json.loads raised RecursionError, which killed the
    # agent (and again on every redelivery)
    ({"resource_specification": "[" * 5000 + "]" * 5000}, "header 'resource_specification' is not JSON"),
    ({"result_serializers": "JSONData"}, "header 'result_serializers' must be a list"),
], ids=["no-function-uuid", "no-task-uuid", "bad-resource-spec", "deep-resource-spec", "bad-serializers"])
def test_bad_task_headers_reach_the_client_as_errors(poison_endpoint: dict[str, Any], change: dict[str, Any], message: str) -> None:
    with Executor(endpoint_id=poison_endpoint["id"]) as ex:
        fut = ex.submit(double, 1)
        eh.wait_for(lambda: fut.task_id is not None, 30, "the submit")
        _rewrite_queued_task(poison_endpoint["url"], poison_endpoint["id"], change)
        ep = eh.start("ep-poison")
        try:
            with pytest.raises(TaskExecutionFailed) as info:
                fut.result(timeout=60)
            assert message in str(info.value)
            assert ex.submit(double, 3).result(timeout=60) == 6  # and the endpoint goes on
        finally:
            assert eh.stop(ep) == 0


def test_undecodable_task_is_dead_lettered(poison_endpoint: dict[str, Any]) -> None:
    url, eid = poison_endpoint["url"], poison_endpoint["id"]
    publisher = open_publisher(url, ca_file=Client().ca_file)
    try:
        before = publisher.declare_queue(topo.DEAD_LETTER_QUEUE, passive=True)
        assert publisher.publish(topo.TASKS_EXCHANGE, topo.task_queue(eid), b"\x01{not a task",
                                 headers={"task_uuid": "x"}, mandatory=True) == "ack"
        ep = eh.start("ep-poison")
        try:
            eh.wait_for(lambda: publisher.declare_queue(topo.DEAD_LETTER_QUEUE, passive=True) == before + 1,
                        30, "the poison message in the dead-letter queue")
            assert publisher.declare_queue(topo.task_queue(eid), passive=True) == 0  # not redelivered
            with Executor(endpoint_id=eid) as ex:
                assert ex.submit(double, 5).result(timeout=60) == 10
            assert re.search(r"dead-lettering an unusable task message \(body is not valid JSON", ep.log)
        finally:
            assert eh.stop(ep) == 0
    finally:
        publisher.close()


def test_service_lists_endpoint_offline_after_stop(stack: dict[str, Any]) -> None:
    eh.configure("ep-offline", "engine: {type: ThreadPoolEngine, max_workers: 1}\n" + FAST)
    ep = eh.start("ep-offline")
    client = Client()
    eh.wait_for(lambda: client.get_endpoint_status(ep.endpoint_id)["status"] == "online", 30, "online")
    assert eh.stop(ep) == 0
    # the last heartbeat says active: false, so the service need not wait for missed beats
    eh.wait_for(lambda: client.get_endpoint_status(ep.endpoint_id)["status"] == "offline", 10, "offline")


@pytest.mark.parametrize(("limits", "reason"), [
    ("idle_heartbeats_soft: 2\n", "idle_heartbeats_soft"),
    ("idle_heartbeats_hard: 2\n", "idle_heartbeats_hard"),
])
def test_idle_limits_stop_the_endpoint(stack: dict[str, Any], limits: str, reason: str) -> None:
    eh.configure("ep-idle", "engine: {type: ThreadPoolEngine, max_workers: 1}\nheartbeat_period: 0.5\n" + limits)
    ep = eh.start("ep-idle")
    if "soft" in limits:  # soft counts only once work has moved and all of it is done
        with Executor(endpoint_id=ep.endpoint_id) as ex:
            assert ex.submit(double, 1).result(timeout=60) == 2
    assert ep.proc.wait(30) == 0
    assert reason in ep.log
    assert not eh.session_members(ep.proc.pid)
