"""An endpoint whose disk is full while the broker refuses its results: the results wait in
memory, are re-sent with the shared back-off, and reach the client once the broker takes them
again -- without an endpoint restart.  The full disk is a real one: a tiny tmpfs mounted as the
endpoint's ``unacked_results/`` and filled up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

import endpoint_helpers as eh
from disk_helpers import fill, tiny_tmpfs
from test_endpoint_lifecycle import FAST, _admin_url, _pika_params, slow_task
from volley import Executor
from volley.protocol import topology as topo

NAME = "ep-disk-full"


@pytest.fixture()
def full_spool(stack: dict[str, Any]) -> Iterator[Path]:
    """The endpoint directory of NAME, whose unacked_results/ is a 64 KiB tmpfs (filled by
    the test once the endpoint is up)."""
    d = eh.configure(NAME, "engine: {type: ThreadPoolEngine, max_workers: 2}\n" + FAST)
    with tiny_tmpfs(d / "unacked_results"):
        yield d


def test_result_refused_with_disk_full_arrives_once_the_broker_accepts(full_spool: Path,
                                                                       stack: dict[str, Any],
                                                                       tmp_path: Path) -> None:
    ep = eh.start(NAME)
    spool = ep.dir / "unacked_results"
    markers = tmp_path / "markers"
    markers.mkdir()
    conn = pika.BlockingConnection(_pika_params(_admin_url(stack)))
    ch = conn.channel()
    ex = Executor(endpoint_id=ep.endpoint_id)
    try:
        fill(spool, "filler.tmp")  # ends like a temporary file, which the store never takes for a result
        # the broker now refuses every result (unroutable + mandatory)
        ch.queue_unbind(topo.RESULTS_QUEUE, topo.RESULTS_EXCHANGE, "*.results")
        futs = [ex.submit(slow_task, i, str(markers), 0.0) for i in range(3)]
        eh.wait_for(lambda: len(list(markers.iterdir())) == 3, 60, "the three tasks to run")
        eh.wait_for(lambda: "No space left on device" in ep.log, 60, "the endpoint to find its disk full")
        assert not any(f.done() for f in futs)
        ch.queue_bind(topo.RESULTS_QUEUE, topo.RESULTS_EXCHANGE, "*.results")
        # the disk is still full: the results come from memory, with no restart
        assert [f.result(timeout=60) for f in futs] == [0, 10, 20]
        assert ep.proc.poll() is None
        assert len(list(markers.iterdir())) == 3  # nothing ran twice
        log = ep.log
        # one line says what failed and what to do, not one per result or per retry
        spool_errors = [line for line in log.splitlines() if "No space left on device" in line]
        assert len(spool_errors) == 1, spool_errors
        assert "free space" in spool_errors[0] and str(spool) in spool_errors[0]
        eh.wait_for(lambda: "held in memory" in ep.log and "all sent" in ep.log, 30,
                    "the endpoint to say the held results are sent")
    finally:
        ex.shutdown(wait=False, cancel_futures=True)
        ch.queue_bind(topo.RESULTS_QUEUE, topo.RESULTS_EXCHANGE, "*.results")
        conn.close()
        assert eh.stop(ep) == 0
