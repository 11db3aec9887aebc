"""Benchmarks 2 and 4 in a fresh process: submission cost and memory per outstanding future.

Run by bench_submission.py, once per transport, against an endpoint that is registered but not
running (tasks wait in its queue, so every future stays outstanding).  A separate process keeps
other benchmarks' threads out of the CPU figure and their heap out of the RSS figure.

Prints one JSON object:

* ``caller_us_per_submit``: wall time of the ``submit()`` loop / N (the caller's cost);
* ``cpu_us_per_task``: process CPU (every thread: submitter, HTTP senders, watcher) from the
  first ``submit()`` until the service has acknowledged every batch (each future has its
  ``task_id``), / N;
* ``rss_bytes_per_future``: RSS growth from before the loop to after it, with all N futures
  outstanding (acknowledged, watched), after ``gc.collect()`` and glibc's ``malloc_trim(0)``, / N;
* ``mean_batch``: tasks per HTTP submission (how well a burst of submit() calls fills batches).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "tasks"))

import workload

from volley import Executor
from volley.sdk.client import Client


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def trim() -> None:
    """Hand freed heap pages back to the OS (glibc), so RSS counts live data, not the slack
    that transient objects of other threads' malloc arenas left behind."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def cpu_by_thread() -> dict[str, float]:
    """CPU seconds so far of each Python thread (by name, numbered suffixes merged) and of the
    rest of the process (the native core's threads), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    per_tid: dict[int, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            per_tid[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, ValueError):
            continue
    out: dict[str, float] = {}
    for t in threading.enumerate():
        cpu = per_tid.pop(t.native_id, 0.0) if t.native_id is not None else 0.0
        name = t.name.rstrip("0123456789").rstrip("_-")
        if name.startswith("volley-results"):
            name = "volley-results"
        out[name] = out.get(name, 0.0) + cpu
    out["other threads (native core, exited)"] = sum(per_tid.values())
    return out


def wait_acknowledged(futures: list, timeout: float) -> None:
    """Until every future has a task id; a cursor keeps the polling O(N) in total."""
    deadline = time.monotonic() + timeout
    i = 0
    while i < len(futures):
        f = futures[i]
        if f.task_id is not None:
            i += 1
            continue
        if f.done():  # failed submission: report it rather than wait forever
            raise SystemExit(f"submission failed: {f.exception()!r}")
        if time.monotonic() > deadline:
            raise SystemExit(f"only {i} of {len(futures)} tasks acknowledged in {timeout}s")
        time.sleep(0.005)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--transport", required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--timeout", type=float, default=900)
    a = ap.parse_args()
    client = Client(service_url=os.environ["BENCH_SERVICE_URL"], token=os.environ["BENCH_TOKEN"],
                    ca_file=os.environ["BENCH_CA_FILE"], do_version_check=False)
    # count the HTTP submissions: how well submit() bursts fill batches
    batch_sizes: list[int] = []
    batch_run = client.batch_run

    def counting_batch_run(endpoint_id: object, batch: object = None) -> object:
        batch_sizes.append(len(batch))  # type: ignore[arg-type]
        return batch_run(endpoint_id, batch)

    client.batch_run = counting_batch_run  # type: ignore[method-assign]

    # CPU the sender threads spend in the HTTP layer (per request, so the wrapper costs nothing
    # per task): the rest of their CPU is building and serializing the batch
    http_cpu = [0.0]
    http_lock = threading.Lock()
    request = client._api.request

    def timed_request(*args: object, **kwargs: object) -> object:
        t = time.thread_time()
        try:
            return request(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            with http_lock:
                http_cpu[0] += time.thread_time() - t

    client._api.request = timed_request  # type: ignore[method-assign]
    ex = Executor(endpoint_id=a.endpoint, client=client, task_group_id=uuid.uuid4(), transport=a.transport)
    try:
        ex.register_function(workload.echo)
        # warm-up: the watcher and its AMQP consumer exist, and every sender thread has started
        # (with its stack and malloc arena: megabytes that would otherwise count as growth)
        for _ in range(20):
            warm = [ex.submit(workload.echo, i, label="warm") for i in range(4 * 128)]
            wait_acknowledged(warm, a.timeout)
            if len(ex._senders._threads) >= 4:  # type: ignore[attr-defined]
                break
        gc.collect()
        trim()
        rss0 = rss_bytes()
        batch_sizes.clear()
        threads0 = cpu_by_thread()
        cpu0, t0 = time.process_time(), time.perf_counter()
        futures = [ex.submit(workload.echo, i, label="x") for i in range(a.n)]
        t1 = time.perf_counter()
        wait_acknowledged(futures, a.timeout)
        cpu1, t2 = time.process_time(), time.perf_counter()
        threads1 = cpu_by_thread()
        http_seconds = http_cpu[0]
        gc.collect()
        trim()
        rss1 = rss_bytes()
        out = {
            "transport": a.transport,
            "tasks": a.n,
            "caller_seconds": t1 - t0,
            "caller_us_per_submit": (t1 - t0) / a.n * 1e6,
            "cpu_seconds": cpu1 - cpu0,
            "cpu_us_per_task": (cpu1 - cpu0) / a.n * 1e6,
            "acknowledged_seconds": t2 - t0,
            "submitted_per_s": a.n / (t2 - t0),
            "rss_growth_bytes": rss1 - rss0,
            "rss_bytes_per_future": (rss1 - rss0) / a.n,
            "outstanding": sum(not f.done() for f in futures),  # after the measurement
            "cpu_us_per_task_by_thread": {
                k: (v - threads0.get(k, 0.0)) / a.n * 1e6 for k, v in threads1.items()
            },
            "http_submissions": len(batch_sizes),
            "http_cpu_us_per_task": http_seconds / a.n * 1e6,
            "http_cpu_ms_per_request": http_seconds / max(1, len(batch_sizes)) * 1e3,
            "mean_batch": sum(batch_sizes) / max(1, len(batch_sizes)),
        }
        print(json.dumps(out), flush=True)
    finally:
        # the endpoint never runs these tasks: let go of the futures without waiting for them
        ex.shutdown(wait=False, cancel_futures=True)
        from volley.sdk.watcher import all_watchers

        for w in all_watchers():
            w.shutdown()
        os._exit(0)  # skip waiting for outstanding futures at interpreter exit


if __name__ == "__main__":
    main()
