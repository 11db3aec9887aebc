"""Benchmark 0, the headline: the stack a user gets, and the engine they would pick instead.

* ``bench_default_stack[native|python]``: a local stack exactly as ``volley local up`` writes it
  (the endpoint's ``config.yaml`` is left to ``up()``; nothing tuned), with the SDK, the service
  and the endpoint on one transport.  The CPU each process spends idle (2 s, no tasks); then,
  on a warm ``volley.Executor``: ``latency_round_trips``
  sequential round trips (p50/p99) and the submit request alone, then ``e2e_tasks`` no-op tasks
  submitted at once (tasks/s, the timed part); the CPU each process spent in each window;
* ``bench_parsl_htex``: Parsl's HighThroughputExecutor with ``peer_workers`` (2) workers
  (the default endpoint has max(2, cores)) and a LocalProvider, the same function and counts
  (``parsl_htex.py``, in a fresh interpreter).

This file runs first (it sorts first), before any other stack exists, and each default stack is
stopped, and waited for, before the next measurement: nothing else of the benchmark's idles or
shuts down beside a headline figure.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

import pytest
import workload
from cputime import CpuWindow
from measure import round_trips, throughput
from stacks import run_probe, submit_request_latency, wait_until_idle

HERE = Path(__file__).resolve().parent
TRANSPORTS = ("native", "python")
IDLE_S = 2.0  # a window with no tasks: heartbeats, polls and timers of each process


@pytest.mark.parametrize("transport", TRANSPORTS)
def bench_default_stack(benchmark: Any, stacks: Any, sizes: Any, transport: str) -> None:
    try:
        stack = stacks.get_default(transport)
        ex = stack.executor()
        out: dict[str, Any] = {}
        try:
            def submit() -> Any:
                return ex.submit(workload.noop)

            wait_until_idle(stack.broker_pid())
            idle = CpuWindow(stack.roles)  # what the stack costs with nothing to do
            idle.start()
            time.sleep(IDLE_S)
            idle_ms_per_s = {role: s / IDLE_S * 1e3 for role, s in idle.stop().items()}
            latency = round_trips(submit, sizes.latency_round_trips, CpuWindow(stack.roles))
            submit_ms, submit_cpu_ms = submit_request_latency(stack, ex, sizes.latency_round_trips)
            latency.update(submit_p50_ms=statistics.median(submit_ms), submit_client_cpu_ms=submit_cpu_ms)
            wait_until_idle(stack.broker_pid())
            benchmark.pedantic(lambda: out.update(throughput(submit, sizes.e2e_tasks, CpuWindow(stack.roles))),
                               rounds=1, iterations=1)
        finally:
            ex.shutdown(wait=False, cancel_futures=True)
        benchmark.extra_info.update(out, transport=transport, config=stack.endpoint_config(),
                                    startup_s=stack.startup_s, latency=latency, idle_cpu_ms_per_s=idle_ms_per_s,
                                    loadavg=os.getloadavg())
    finally:
        stacks.stop(transport, "default", wait=True)


def bench_parsl_htex(benchmark: Any, sizes: Any) -> None:
    pytest.importorskip("parsl")
    out: dict[str, Any] = {}

    def run() -> None:
        out.update(run_probe(HERE / "parsl_htex.py", "--n", str(sizes.e2e_tasks),
                             "--round-trips", str(sizes.latency_round_trips),
                             "--workers", str(sizes.peer_workers),
                             env=dict(os.environ), timeout=3600, what="Parsl HTEX"))

    benchmark.pedantic(run, rounds=1, iterations=1)
    tp = out.pop("throughput")
    benchmark.extra_info.update(out, **tp, loadavg=os.getloadavg())
