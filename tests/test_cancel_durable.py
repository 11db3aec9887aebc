"""A cancelled task never runs, however deep in the queue it waits and whatever happens to its
endpoint meanwhile; and ``cancel()`` answers at once.  The real local stack (broker, service on
SQLite) and a thread-pool endpoint with one worker and a fixed prefetch, so tasks queued behind
a blocked one stay in the broker's queue, not yet received.  Files the tasks would write prove
what ran."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

import endpoint_helpers as eh
from disk_helpers import fill, tiny_tmpfs
from task_functions import touch, touch_then_wait
from test_endpoint_lifecycle import _admin_url, _pika_params
from volley import Client, Executor
from volley.protocol import topology as topo

FAST = "heartbeat_period: 1\nshutdown_grace: 1\n"
ONE_AT_A_TIME = "engine: {type: ThreadPoolEngine, max_workers: 1}\nprefetch: 1\n" + FAST


def append_line(log: str, i: int) -> int:
    with open(log, "a") as f:
        f.write(f"{i}\n")
    return i


def double(x: int) -> int:
    return 2 * x


def _statuses(client: Client, ids: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for i in range(0, len(ids), 1000):
        docs = client._api.post("/v2/batch_status", json={"task_ids": ids[i : i + 1000]})["results"]
        out.update({tid: doc.get("status") for tid, doc in docs.items()})
    return out


def _all_cancelled(client: Client, ids: list[str]) -> bool:
    return set(_statuses(client, ids).values()) == {"cancelled"}


def _ready(stack: dict[str, Any], queue: str) -> int:
    """Messages ready (not delivered to a consumer) in ``queue``."""
    conn = pika.BlockingConnection(_pika_params(_admin_url(stack)))
    try:
        return int(conn.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        conn.close()


def _wait_queued(stack: dict[str, Any], endpoint_id: str, n: int) -> None:
    """Until ``n`` tasks wait in the endpoint's task queue: published, not received."""
    eh.wait_for(lambda: _ready(stack, topo.task_queue(endpoint_id)) == n, 60, f"{n} tasks in the task queue")


@pytest.fixture()
def blocked(stack: dict[str, Any], tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A one-worker endpoint (prefetch 1) busy with a task that runs until ``release`` exists."""
    name = f"ep-cancel-{uuid.uuid4().hex[:6]}"
    eh.configure(name, ONE_AT_A_TIME)
    ep = eh.start(name)
    started, release = tmp_path / "started", tmp_path / "release"
    ex = Executor(endpoint_id=ep.endpoint_id)
    busy = ex.submit(touch_then_wait, str(started), str(release))
    eh.wait_for(started.exists, 60, "the blocking task to start")
    state = {"name": name, "ep": ep, "ex": ex, "busy": busy, "release": release, "client": Client(),
             "stack": stack}
    try:
        yield state
    finally:
        release.touch()
        ex.shutdown(wait=False, cancel_futures=True)
        if state["ep"].proc.poll() is None:
            assert eh.stop(state["ep"]) == 0, state["ep"].log


def _drain(state: dict[str, Any]) -> None:
    """Release the blocking task and wait until a task sent after everything else has run: the
    endpoint has then taken (and run or dropped) every task queued before it."""
    state["release"].touch()
    with Executor(endpoint_id=state["ep"].endpoint_id) as ex:
        assert ex.submit(double, 21).result(timeout=300) == 42


def test_cancels_of_more_tasks_than_any_memory_bound_all_hold(blocked: dict[str, Any], tmp_path: Path) -> None:
    """20,200 tasks wait behind the blocked one, far more than the prefetch lets the endpoint
    take; all are cancelled; none of them ever runs."""
    ex, client = blocked["ex"], blocked["client"]
    log = tmp_path / "ran.log"
    futs = [ex.submit(append_line, str(log), i) for i in range(20_200)]
    eh.wait_for(lambda: all(f.task_id for f in futs), 300, "the tasks to be accepted")
    ids = [str(f.task_id) for f in futs]
    _wait_queued(blocked["stack"], blocked["ep"].endpoint_id, len(ids))
    for i in range(0, len(ids), 10_000):
        outcomes = client.cancel_task(ids[i : i + 10_000])
        assert set(outcomes.values()) == {"requested"}
    eh.wait_for(lambda: _all_cancelled(client, ids), 300, "the endpoint to answer every cancel")
    _drain(blocked)
    ran = log.read_text().split() if log.exists() else []
    assert ran == [], f"{len(ran)} cancelled tasks ran, the first {ran[:5]}"


def test_a_cancel_survives_an_endpoint_kill_before_the_task_came(blocked: dict[str, Any], tmp_path: Path) -> None:
    ex, client, ep = blocked["ex"], blocked["client"], blocked["ep"]
    marker = tmp_path / "victim-ran"
    victim = ex.submit(touch, str(marker))
    eh.wait_for(lambda: victim.task_id, 30, "the victim's task id")
    _wait_queued(blocked["stack"], ep.endpoint_id, 1)
    assert client.cancel_task(victim.task_id) == {victim.task_id: "requested"}
    eh.wait_for(lambda: _all_cancelled(client, [victim.task_id]), 60, "the endpoint to answer the cancel")
    eh.kill_session(ep.proc.pid)  # the victim is still in the task queue, never received
    ep.proc.wait()
    blocked["ep"] = eh.start(blocked["name"])
    _drain(blocked)
    assert not marker.exists(), "the cancelled task ran after the restart"


def test_a_cancel_sent_while_the_endpoint_is_down_applies_before_its_first_task(
        blocked: dict[str, Any], tmp_path: Path) -> None:
    ex, client = blocked["ex"], blocked["client"]
    blocked["release"].touch()
    assert blocked["busy"].result(timeout=60) == "released"
    assert eh.stop(blocked["ep"]) == 0
    eid = blocked["ep"].endpoint_id
    eh.wait_for(lambda: client.get_endpoint_status(eid)["status"] == "offline", 60, "the endpoint to be offline")
    marker = tmp_path / "victim-ran"
    victim = ex.submit(touch, str(marker))  # first in the queue of a stopped endpoint
    eh.wait_for(lambda: victim.task_id, 30, "the victim's task id")
    _wait_queued(blocked["stack"], eid, 1)
    # the service cancels it (nothing can run it now) and leaves a notice for the endpoint
    assert client.cancel_task(victim.task_id) == {victim.task_id: "cancelled"}
    blocked["ep"] = eh.start(blocked["name"])
    _drain(blocked)
    assert not marker.exists(), "the task cancelled while its endpoint was down ran at its start"
    eh.wait_for(lambda: _all_cancelled(client, [victim.task_id]), 60, "the victim to be answered cancelled")


@pytest.fixture()
def small_record_disk(stack: dict[str, Any]) -> Iterator[Path]:
    """The endpoint directory of ep-cancel-full, whose cancelled_tasks/ is a 64 KiB tmpfs."""
    d = eh.configure("ep-cancel-full", ONE_AT_A_TIME)
    with tiny_tmpfs(d / "cancelled_tasks"):
        yield d


def test_a_cancel_notice_is_acked_only_once_recorded(small_record_disk: Path, stack: dict[str, Any],
                                                    tmp_path: Path) -> None:
    """The notice reaches the endpoint, which applies it, but cannot write it down (its disk is
    full): it stays unacked, so when the endpoint is killed it goes back to the queue, and the
    next run applies it (and acks it) before the cancelled task comes."""
    ep = eh.start("ep-cancel-full")
    started, release, marker = tmp_path / "started", tmp_path / "release", tmp_path / "victim-ran"
    ex = Executor(endpoint_id=ep.endpoint_id)
    client = Client()
    try:
        busy = ex.submit(touch_then_wait, str(started), str(release))
        eh.wait_for(started.exists, 60, "the blocking task to start")
        victim = ex.submit(touch, str(marker))
        eh.wait_for(lambda: victim.task_id, 30, "the victim's task id")
        _wait_queued(stack, ep.endpoint_id, 1)
        fill(small_record_disk / "cancelled_tasks")
        assert client.cancel_task(victim.task_id) == {victim.task_id: "requested"}
        # received and applied: the endpoint answered the victim cancelled
        eh.wait_for(lambda: _all_cancelled(client, [victim.task_id]), 60, "the endpoint to answer the cancel")
        eh.kill_session(ep.proc.pid)
        ep.proc.wait()
        eh.wait_for(lambda: _ready(stack, topo.control_queue(ep.endpoint_id)) == 1, 30,
                    "the unrecorded cancel notice to be back in the control queue")
        assert "could not record cancelled tasks" in ep.log
        (small_record_disk / "cancelled_tasks" / "filler").unlink()
        ep = eh.start("ep-cancel-full")
        eh.wait_for(lambda: _ready(stack, topo.control_queue(ep.endpoint_id)) == 0, 30,
                    "the notice to be taken again")
        release.touch()
        assert busy.result(timeout=120) == "released"  # ran again after the kill
        assert ex.submit(double, 4).result(timeout=120) == 8
        assert not marker.exists(), "the cancelled task ran"
    finally:
        release.touch()
        ex.shutdown(wait=False, cancel_futures=True)
        if ep.proc.poll() is None:
            assert eh.stop(ep) == 0, ep.log
