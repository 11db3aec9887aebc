"""Benchmark 1: result ingestion.  N packed ``Result``s already sit in a task group's queue; how
fast do they become resolved futures?

The queue holds what the service's router sends a Volley SDK: result batches of ``ROUTE_CHUNK``
(1,000) results, at most 1 MiB each (docs/protocol.md, "Result batches").  The ``_single``
variant holds one result per message, what an upstream SDK gets.

* ``bench_ingest_futures[native|python]``: the SDK's real ``ResultWatcher`` (consumer, decode,
  matching, ``deserialize``, ``set_result``) with every future registered before it starts;
  the clock runs from ``start()`` until the last future is resolved (connection set-up included).
* ``bench_raw_drain[native|python]``: the same queue drained by a bare consumer of the same
  transport (deliveries decoded, batch-acked, nothing else).  The difference is the Python-side
  cost per result.

Both transports consume the same broker (the native stack's), as the SDK's user, through the
URL the service hands out.
"""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Any

import pytest
from cputime import cpu_seconds
from stacks import BenchStack, wait_until_idle

from volley.protocol.batches import BATCH_HEADER, messages_for
from volley.protocol.messages import pack_result
from volley.sdk.future import ComputeFuture
from volley.sdk.watcher import ResultWatcher
from volley.serialize import ComputeSerializer
from volley.service.router import ROUTE_CHUNK
from volley.transport import open_consumer, open_publisher

TRANSPORTS = ("native", "python")
PUBLISH_CHUNK = 5_000


class FilledQueue:
    """A task-group queue holding ``n`` packed results, as the service forwards them to an SDK:
    ``batches`` as to Volley's SDK, else one per message."""

    def __init__(self, stack: BenchStack, n: int, *, batches: bool = True) -> None:
        self.stack = stack
        self.client = stack.client()
        info = self.client.get_result_amqp_url()
        self.url = info["connection_url"]
        self.task_group_id = str(uuid.uuid4())
        self.queue = info["queue_prefix"] + self.task_group_id
        broker = stack.broker()
        self._admin = open_publisher(broker.url(), transport="native", ca_file=broker.ca_file)
        self._admin.declare_queue(self.queue)
        data = ComputeSerializer().serialize(None)  # what a no-op task returns
        self.task_ids = [str(uuid.uuid4()) for _ in range(n)]
        now = int(time.time())
        per_message = ROUTE_CHUNK if batches else 1
        for i in range(0, n, PUBLISH_CHUNK):
            bodies = [pack_result(tid, data) for tid in self.task_ids[i : i + PUBLISH_CHUNK]]
            chunk = [("", self.queue, body, headers, now)
                     for j in range(0, len(bodies), per_message)
                     for _n, body, headers in messages_for(bodies[j : j + per_message])]
            outcomes = self._admin.publish_batch(chunk, timeout=120)
            assert set(outcomes) == {"ack"}, "the broker refused benchmark results"

    def delete(self) -> None:
        try:
            self._admin.delete_queue(self.queue)
        finally:
            self._admin.close()


class _CountingWatcher(ResultWatcher):
    """The real watcher, counting the batches it handles (how well deliveries coalesce)."""

    batches = 0

    def _handle(self, consumer: Any, batch: Any) -> None:
        self.batches += 1
        super()._handle(consumer, batch)


def _ingest(filled: FilledQueue, transport: str) -> dict[str, Any]:
    futures = [ComputeFuture(tid) for tid in filled.task_ids]
    watcher = _CountingWatcher(filled.task_group_id, filled.client, transport=transport, port=None)
    watcher.watch(futures)
    t0 = time.perf_counter()
    watcher.start()
    # one consumer delivers in queue order, so the last future resolves last
    futures[-1].exception(timeout=600)
    elapsed = time.perf_counter() - t0
    watcher.shutdown()
    watcher.join(timeout=30)
    unresolved = sum(not f.done() for f in futures)
    assert unresolved == 0, f"{unresolved} futures unresolved"
    assert futures[0].result() is None
    return {"seconds": elapsed, "results": len(futures), "batches": watcher.batches}


def _drain(filled: FilledQueue, transport: str) -> dict[str, Any]:
    """The watcher's consume loop without the watcher: the same batch size and ack policy
    (one ``ack_through`` per batch), no futures."""
    ca = filled.stack.ca_file
    t0 = time.perf_counter()
    consumer = open_consumer(filled.url, filled.queue, transport=transport, ca_file=ca, prefetch=4096)
    got = batches = 0
    try:
        while got < len(filled.task_ids):
            batch = consumer.next_batch(4096, timeout=5.0)
            if not batch:
                raise AssertionError(f"queue ran dry after {got} deliveries")
            got += sum(d.headers.get(BATCH_HEADER, 1) if d.headers else 1 for d in batch)
            batches += 1
            consumer.ack_through(batch[-1].tag)
        elapsed = time.perf_counter() - t0
    finally:
        consumer.close()
    return {"seconds": elapsed, "results": got, "batches": batches}


def _run(benchmark: Any, stacks: Any, sizes: Any, transport: str, fn: Any, *, batches: bool = True) -> None:
    stack = stacks.get("native")
    broker_pid = stack.broker_pid()
    state: dict[str, Any] = {}
    rates: list[float] = []
    cpu: dict[str, list[float]] = {"broker": [], "client": []}

    def setup() -> tuple[tuple, dict]:
        if "filled" in state:
            state.pop("filled").delete()
        state["filled"] = FilledQueue(stack, sizes.ingest_results, batches=batches)
        # after filling (and deleting the last round's queue) the broker goes on writing and
        # compacting for a while; that work must not be billed to this round
        wait_until_idle(broker_pid)
        return (), {}

    def run() -> None:
        b0, c0 = cpu_seconds(broker_pid), time.process_time()
        out = fn(state["filled"], transport)
        b1, c1 = cpu_seconds(broker_pid), time.process_time()
        rates.append(out["results"] / out["seconds"])
        cpu.setdefault("batch", []).append(out["results"] / max(1, out["batches"]))
        # who was busy: the broker's CPU per result against ours says which side is the limit
        cpu["broker"].append((b1 - b0) / out["results"] * 1e6)
        cpu["client"].append((c1 - c0) / out["results"] * 1e6)
        cpu.setdefault("broker_share", []).append((b1 - b0) / out["seconds"])

    try:
        benchmark.pedantic(run, setup=setup, rounds=sizes.ingest_rounds, iterations=1)
    finally:
        if "filled" in state:
            state["filled"].delete()
    rate = statistics.median(rates)
    benchmark.extra_info.update(
        transport=transport,
        batches=batches,
        results=sizes.ingest_results,
        rounds=len(rates),
        rates_per_s=rates,
        results_per_s=rate,
        us_per_result=1e6 / rate,
        broker_cpu_us_per_result=statistics.median(cpu["broker"]),
        client_cpu_us_per_result=statistics.median(cpu["client"]),
        broker_busy=statistics.median(cpu["broker_share"]),
        mean_batch=statistics.median(cpu["batch"]),
    )


@pytest.mark.parametrize("transport", TRANSPORTS)
def bench_ingest_futures(benchmark: Any, stacks: Any, sizes: Any, transport: str) -> None:
    _run(benchmark, stacks, sizes, transport, _ingest)


@pytest.mark.parametrize("transport", TRANSPORTS)
def bench_raw_drain(benchmark: Any, stacks: Any, sizes: Any, transport: str) -> None:
    _run(benchmark, stacks, sizes, transport, _drain)


@pytest.mark.parametrize("transport", TRANSPORTS)
def bench_ingest_futures_single(benchmark: Any, stacks: Any, sizes: Any, transport: str) -> None:
    """One result per message: what an upstream SDK (or any SDK before result batches) gets."""
    _run(benchmark, stacks, sizes, transport, _ingest, batches=False)
