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
from typing import Any

import pytest
import workload
from cputime import CpuWindow
from measure import round_trips, throughput
from profiling import Profiler
from sizes import current
from stacks import submit_request_latency

TRANSPORTS = ("native", "python")


@pytest.mark.parametrize("n", current().e2e_curve)
@pytest.mark.parametrize("transport", TRANSPORTS)
def bench_e2e_throughput(benchmark: Any, stacks: Any, transport: str, n: int) -> None:
    stack = stacks.get(transport)
    ex = stack.executor()
    out: dict[str, Any] = {}
    try:
        # where the machine's CPU went, per task: which process the stack's rate is waiting for
        benchmark.pedantic(lambda: out.update(throughput(lambda: ex.submit(workload.noop), n,
                                                         CpuWindow(stack.roles))),
                           rounds=1, iterations=1)
    finally:
        ex.shutdown(wait=False, cancel_futures=True)
    benchmark.extra_info.update(out, transport=transport, headline=n == current().e2e_tasks,
                                loadavg=os.getloadavg())


@pytest.mark.parametrize("transport", TRANSPORTS)
def bench_latency(benchmark: Any, stacks: Any, sizes: Any, transport: str) -> None:
    stack = stacks.get(transport)
    ex = stack.executor()
    out: dict[str, Any] = {}
    try:
        benchmark.pedantic(lambda: out.update(round_trips(lambda: ex.submit(workload.noop),
                                                          sizes.latency_round_trips)),
                           rounds=1, iterations=1)
        submit_ms, submit_cpu_ms = submit_request_latency(stack, ex, sizes.latency_round_trips)
    finally:
        ex.shutdown(wait=False, cancel_futures=True)
    benchmark.extra_info.update(out, transport=transport, submit_p50_ms=statistics.median(submit_ms),
                                submit_client_cpu_ms=submit_cpu_ms)


def bench_default_prefetch(benchmark: Any, stacks: Any, sizes: Any) -> None:
    stack = stacks.get("native", prefetch=None)
    try:
        ex = stack.executor()
        out: dict[str, Any] = {}
        try:
            benchmark.pedantic(lambda: out.update(throughput(lambda: ex.submit(workload.noop),
                                                             sizes.default_prefetch_tasks)),
                               rounds=1, iterations=1)
        finally:
            ex.shutdown(wait=False, cancel_futures=True)
    finally:
        stacks.stop("native", None)  # not needed again: free its broker's memory and CPU
    benchmark.extra_info.update(out, transport="native", prefetch=f"default (2 x {sizes.endpoint_workers} + 8)")


def bench_e2e_profile(benchmark: Any, stacks: Any, sizes: Any) -> None:
    stack = stacks.get("native")
    ex = stack.executor()
    prof = Profiler({"service": stack.service_pid(), "endpoint": stack.endpoint_pid(),
                     "client": os.getpid()})
    out: dict[str, Any] = {}
    try:
        if not prof.enabled:
            pytest.skip("py-spy not installed (or BENCH_PROFILE=0): no profile")
        benchmark.pedantic(lambda: out.update(throughput(lambda: ex.submit(workload.noop), sizes.e2e_tasks)),
                           rounds=1, iterations=1)
    finally:
        profiles = prof.stop()
        ex.shutdown(wait=False, cancel_futures=True)
    benchmark.extra_info.update(out, transport="native", profiles=profiles)
