"""Benchmark 3: no-op tasks through the whole local stack, one stack per transport (the SDK, the
service and the endpoint all on that transport; thread-pool endpoint).

* ``bench_e2e_throughput[transport-N]``: N no-op tasks submitted at once, clock from the first
  ``submit()`` to the last resolved future; the largest N is the headline, all of them feed
  the throughput-vs-N plot;
* ``bench_latency[transport]``: sequential round trips (``submit(noop).result()``), p50/p99;
* ``bench_default_prefetch``: the same no-op tasks through an endpoint left at its default
  ``prefetch`` (2 x workers + 8), to show what that setting costs;
* ``bench_e2e_profile``: an extra headline-sized run on the native stack with py-spy sampling
  the service, the endpoint and this process (when py-spy is installed); only its profile is
  reported, never its rate.
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from concurrent.futures import wait
from typing import Any

import pytest
import workload
from profiling import Profiler
from sizes import current

from volley import Executor

TRANSPORTS = ("native", "python")


def _executor(stack: Any, transport: str) -> Executor:
    ex = Executor(endpoint_id=stack.endpoint_id, client=stack.client(), task_group_id=uuid.uuid4(),
                  transport=transport)
    # warm-up: registration, the first batch and the watcher's connection are not measured
    ex.submit(workload.noop).result(timeout=120)
    return ex


def _throughput(ex: Executor, n: int, stack: Any = None) -> dict[str, Any]:
    cpu0 = stack.cpu_seconds() if stack is not None else {}
    t0 = time.perf_counter()
    futures = [ex.submit(workload.noop) for _ in range(n)]
    t1 = time.perf_counter()
    done, pending = wait(futures, timeout=1800)
    elapsed = time.perf_counter() - t0
    cpu1 = stack.cpu_seconds() if stack is not None else {}
    assert not pending, f"{len(pending)} of {n} tasks unfinished"
    failed = [f for f in done if f.exception() is not None]
    assert not failed, f"{len(failed)} tasks failed, e.g. {failed[0].exception()!r}"
    # where the machine's CPU went, per task: which process the stack's rate is waiting for
    cpu = {k: (cpu1[k] - cpu0[k]) / n * 1e6 for k in cpu0}
    return {"tasks": n, "seconds": elapsed, "tasks_per_s": n / elapsed, "submit_seconds": t1 - t0,
            "cpu_us_per_task": cpu}


@pytest.mark.parametrize("n", current().e2e_curve)
@pytest.mark.parametrize("transport", TRANSPORTS)
def bench_e2e_throughput(benchmark: Any, stacks: Any, transport: str, n: int) -> None:
    stack = stacks.get(transport)
    ex = _executor(stack, transport)
    out: dict[str, Any] = {}
    try:
        benchmark.pedantic(lambda: out.update(_throughput(ex, n, stack)), rounds=1, iterations=1)
    finally:
        ex.shutdown(wait=False, cancel_futures=True)
    benchmark.extra_info.update(out, transport=transport, headline=n == current().e2e_tasks,
                                loadavg=os.getloadavg())


@pytest.mark.parametrize("transport", TRANSPORTS)
def bench_latency(benchmark: Any, stacks: Any, sizes: Any, transport: str) -> None:
    stack = stacks.get(transport)
    ex = _executor(stack, transport)
    samples: list[float] = []

    def run() -> None:
        for _ in range(sizes.latency_round_trips):
            t0 = time.perf_counter()
            ex.submit(workload.noop).result(timeout=60)
            samples.append(time.perf_counter() - t0)

    try:
        benchmark.pedantic(run, rounds=1, iterations=1)
        submit_ms, submit_cpu_ms = _submit_latency(stack, ex, sizes.latency_round_trips)
    finally:
        ex.shutdown(wait=False, cancel_futures=True)
    q = statistics.quantiles(samples, n=100, method="inclusive")
    benchmark.extra_info.update(
        transport=transport, round_trips=len(samples),
        p50_ms=statistics.median(samples) * 1e3, p90_ms=q[89] * 1e3, p99_ms=q[98] * 1e3,
        min_ms=min(samples) * 1e3, max_ms=max(samples) * 1e3,
        submit_p50_ms=statistics.median(submit_ms),
        submit_client_cpu_ms=submit_cpu_ms,
    )


def _submit_latency(stack: Any, ex: Executor, n: int) -> tuple[list[float], float]:
    """The HTTP part of a round trip alone: one-task batches posted to an endpoint that is not
    running (the service stores the task and publishes it with a confirm, nothing executes).
    Returns the latencies (ms) and this process's CPU per request (ms): the client's share."""
    idle = stack.idle_endpoint()
    fid = ex.register_function(workload.echo)
    client = ex.client
    out = []
    cpu0 = time.process_time()
    try:
        for i in range(n):
            batch = client.create_batch(task_group_id=ex.task_group_id, create_websocket_queue=True)
            batch.add(fid, (i,), {})
            t0 = time.perf_counter()
            client.batch_run(idle, batch)
            out.append((time.perf_counter() - t0) * 1e3)
        cpu = (time.process_time() - cpu0) / n * 1e3
    finally:
        stack.drop_idle_endpoints()
    return out, cpu


def bench_default_prefetch(benchmark: Any, stacks: Any, sizes: Any) -> None:
    stack = stacks.get("native", prefetch=None)
    try:
        ex = _executor(stack, "native")
        out: dict[str, Any] = {}
        try:
            benchmark.pedantic(lambda: out.update(_throughput(ex, sizes.default_prefetch_tasks)),
                               rounds=1, iterations=1)
        finally:
            ex.shutdown(wait=False, cancel_futures=True)
    finally:
        stacks.stop("native", None)  # not needed again: free its broker's memory and CPU
    benchmark.extra_info.update(out, transport="native", prefetch=f"default (2 x {sizes.endpoint_workers} + 8)")


def bench_e2e_profile(benchmark: Any, stacks: Any, sizes: Any) -> None:
    stack = stacks.get("native")
    ex = _executor(stack, "native")
    prof = Profiler({"service": stack.service_pid(), "endpoint": stack.endpoint_pid(),
                     "client": os.getpid()})
    out: dict[str, Any] = {}
    try:
        if not prof.enabled:
            pytest.skip("py-spy not installed (or BENCH_PROFILE=0): no profile")
        benchmark.pedantic(lambda: out.update(_throughput(ex, sizes.e2e_tasks)), rounds=1, iterations=1)
    finally:
        profiles = prof.stop()
        ex.shutdown(wait=False, cancel_futures=True)
    benchmark.extra_info.update(out, transport="native", profiles=profiles)
