"""The end-to-end measurements, the same for every system under test (a Volley ``Executor`` or a
Parsl DataFlowKernel): each takes ``submit``, a callable that submits one no-op task and returns
its ``concurrent.futures.Future``.

* ``throughput``: N tasks submitted at once; the clock runs from the first submit to the last
  resolved future (start-up excluded: the caller warms the system up first);
* ``round_trips``: sequential ``submit().result()`` on a warm system, p50/p90/p99.

Both optionally measure the CPU each process spent in the window (``cputime.CpuWindow``).
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import Future, wait
from typing import Any

from cputime import CpuWindow, per_task_us

Submit = Any  # Callable[[], Future[Any]]; Parsl's AppFuture and Volley's ComputeFuture are Futures


def throughput(submit: Submit, n: int, cpu: CpuWindow | None = None, *, timeout: float = 1800) -> dict[str, Any]:
    if cpu is not None:
        cpu.start()
    t0 = time.perf_counter()
    futures: list[Future[Any]] = [submit() for _ in range(n)]
    t1 = time.perf_counter()
    done, pending = wait(futures, timeout=timeout)
    elapsed = time.perf_counter() - t0
    spent = cpu.stop() if cpu is not None else {}
    assert not pending, f"{len(pending)} of {n} tasks unfinished after {timeout:.0f}s"
    failed = [f for f in done if f.exception() is not None]
    assert not failed, f"{len(failed)} of {n} tasks failed, e.g. {failed[0].exception()!r}"
    return {"tasks": n, "seconds": elapsed, "tasks_per_s": n / elapsed, "submit_seconds": t1 - t0,
            "cpu_us_per_task": per_task_us(spent, n)}


def round_trips(submit: Submit, n: int, cpu: CpuWindow | None = None, *, timeout: float = 60) -> dict[str, Any]:
    samples: list[float] = []
    if cpu is not None:
        cpu.start()
    for _ in range(n):
        t0 = time.perf_counter()
        submit().result(timeout=timeout)
        samples.append(time.perf_counter() - t0)
    spent = cpu.stop() if cpu is not None else {}
    out = latency_summary(samples)
    # what one round trip cost each process: with the wall time, whether waits or work dominate
    out["cpu_us_per_round_trip"] = per_task_us(spent, n)
    return out


def latency_summary(samples: list[float]) -> dict[str, Any]:
    """Seconds -> the page's latency figures, in ms."""
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return {"round_trips": len(samples), "p50_ms": statistics.median(samples) * 1e3,
            "p90_ms": q[89] * 1e3, "p99_ms": q[98] * 1e3, "min_ms": min(samples) * 1e3,
            "max_ms": max(samples) * 1e3, "mean_ms": statistics.fmean(samples) * 1e3}
