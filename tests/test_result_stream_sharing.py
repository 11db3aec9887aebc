"""Every future of a task group resolves, whoever else reads the group and whatever happens to
its result stream: a second process reloading the group, two Clients of one service spelled
two ways, an AMQP port that is closed or never answers, a result queue that overflows while its
watcher is connected.  Real stack, real broker, both transports."""

from __future__ import annotations

import json
import logging
import re
import socket
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from task_functions import staggered, when_released
from volley import Client, Executor
from volley.sdk import watcher as W
from volley.sdk.watcher import ResultWatcher

pytestmark = pytest.mark.stack
TRANSPORTS = ["native", "python"]


def _watcher(task_group_id: str) -> ResultWatcher:
    found = [w for w in W.all_watchers() if w.task_group_id == task_group_id]
    assert found, f"no watcher for task group {task_group_id}"
    return found[0]


def _started(w: ResultWatcher) -> bool:
    """The watcher reads its stream, or has settled for fetching results from the service."""
    loop = w._loop
    return (loop is not None and loop.connected.is_set()) or getattr(w, "mode", None) == "poll"


def _wait(predicate: Any, timeout: float, what: str) -> None:
    from service_helpers import wait_for

    wait_for(predicate, timeout=timeout, what=what)


RELOADER = textwrap.dedent("""
    import json, sys, time
    from volley import Executor
    from volley.sdk import watcher as W
    tg, ep, transport = sys.argv[1:4]
    ex = Executor(endpoint_id=ep, transport=transport)
    futures = list(ex.reload_tasks(tg))
    w = [w for w in W.all_watchers() if w.task_group_id == tg][0]
    deadline = time.monotonic() + 60
    while not ((w._loop is not None and w._loop.connected.is_set()) or getattr(w, "mode", None) == "poll"):
        if time.monotonic() > deadline:
            sys.exit("the reloading watcher never started")
        time.sleep(0.02)
    print("ready", flush=True)
    print(json.dumps(sorted(f.result(timeout=90) for f in futures)), flush=True)
    ex.shutdown()
""")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_second_process_reloading_the_group_and_the_first_both_get_every_result(
        endpoint_id: str, tmp_path: Path, transport: str) -> None:
    release = tmp_path / "release"
    n = 24
    tg = str(uuid.uuid4())
    with Executor(endpoint_id=endpoint_id, transport=transport, task_group_id=tg) as ex:
        futures = [ex.submit(when_released, str(release), i) for i in range(n)]
        _wait(lambda: all(f.task_id for f in futures), 60, "the submission")
        _wait(lambda: _started(_watcher(tg)), 60, "the first watcher")
        other = subprocess.Popen([sys.executable, "-c", RELOADER, tg, endpoint_id, transport],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert other.stdout is not None
            line = other.stdout.readline()
            assert line.strip() == "ready", other.stderr.read() if other.stderr else line
            release.touch()
            assert [f.result(timeout=90) for f in futures] == list(range(n))
            out, err = other.communicate(timeout=120)
        finally:
            other.kill()
    assert other.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == list(range(n))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_two_clients_spelling_the_service_two_ways_share_a_task_group(
        stack: dict[str, Any], endpoint_id: str, tmp_path: Path, transport: str) -> None:
    url = stack["service_url"]
    assert "127.0.0.1" in url
    release = tmp_path / "release"
    group = str(uuid.uuid4())
    one = Executor(endpoint_id=endpoint_id, client=Client(service_url=url), task_group_id=group,
                   transport=transport)
    two = Executor(endpoint_id=endpoint_id, client=Client(service_url=url.replace("127.0.0.1", "localhost") + "/"),
                   task_group_id=group, transport=transport)
    with one, two:
        a = [one.submit(when_released, str(release), i) for i in range(12)]
        b = [two.submit(when_released, str(release), 100 + i) for i in range(12)]
        _wait(lambda: all(f.task_id for f in a + b), 60, "the submissions")
        _wait(lambda: all(_started(w) for w in W.all_watchers() if w.task_group_id == group), 60, "the watchers")
        release.touch()
        assert [f.result(timeout=90) for f in a] == list(range(12))
        assert [f.result(timeout=90) for f in b] == [100 + i for i in range(12)]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def silent_port() -> Iterator[int]:
    """A port that takes the TCP connection and then never says a word (a middlebox that drops
    the traffic, as far as AMQP can tell)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield int(server.getsockname()[1])
    stop.set()
    t.join()
    for c in held:
        c.close()
    server.close()


def _stream_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "volley.sdk.watcher" and r.levelno >= logging.WARNING and "amqp_port" in r.getMessage()]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("port", ["closed", "silent"])
def test_an_unreachable_amqp_port_gets_results_from_the_service_with_one_warning(
        endpoint_id: str, caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest,
        transport: str, port: str) -> None:
    amqp_port = _closed_port() if port == "closed" else request.getfixturevalue("silent_port")
    caplog.set_level(logging.INFO, logger="volley.sdk.watcher")
    with Executor(endpoint_id=endpoint_id, amqp_port=amqp_port, transport=transport,
                  task_group_id=str(uuid.uuid4())) as ex:
        futures = [ex.submit(staggered, i) for i in range(6)]
        assert [f.result(timeout=60) for f in futures] == list(range(6))
        late = ex.submit(staggered, 7)  # registered while the watcher already polls
        assert late.result(timeout=60) == 7
    warned = _stream_warnings(caplog)
    assert len(warned) == 1, warned
    assert str(amqp_port) in warned[0]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_results_dropped_by_a_full_result_queue_reach_a_connected_watcher(
        stack: dict[str, Any], endpoint_id: str, monkeypatch: pytest.MonkeyPatch, transport: str) -> None:
    """The group's queue holds one message at most (a broker policy, drop-head): while the
    watcher is stuck the broker drops results; once it moves on it still resolves them all."""
    from service_helpers import broker_info, management

    monkeypatch.setattr(W, "PREFETCH", 1)
    info = broker_info(stack)
    api = management(info)
    client = Client()
    queue_prefix = client.get_result_amqp_url()["queue_prefix"]
    group = str(uuid.uuid4())
    policy = f"tiny-{group[:8]}"
    api._call("PUT", f"/policies/%2F/{policy}",
              {"pattern": "^" + re.escape(queue_prefix + group) + "$", "apply-to": "queues", "priority": 10,
               "definition": {"max-length": 1, "overflow": "drop-head"}})
    gate = threading.Event()

    def stall(_f: Any) -> None:  # runs in the watcher's thread: it stops consuming
        gate.wait(120)

    try:
        with Executor(endpoint_id=endpoint_id, client=client, task_group_id=group, transport=transport) as ex:
            futures = [ex.submit(staggered, i) for i in range(12)]
            for f in futures:
                f.add_done_callback(stall)
            _wait(lambda: all(f.task_id for f in futures), 60, "the submission")
            ids = [str(f.task_id) for f in futures]
            _wait(lambda: not any(r["pending"] for r in client.get_batch_result(ids).values()), 90,
                  "every task to complete at the service")
            gate.set()
            assert [f.result(timeout=90) for f in futures] == list(range(12))
    finally:
        gate.set()
        api._call("DELETE", f"/policies/%2F/{policy}", missing_ok=True)
