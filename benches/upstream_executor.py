"""The upstream ``globus_compute_sdk.Executor`` (4.19, bench environment only) pointed at our
service the way upstream documents for another service: a static bearer token, ``_compute_web_client``
replaced to target the local URL, and ``SSL_CERT_FILE`` set by the caller so that upstream's
pika trusts the private broker's CA.  Runs N no-op tasks and prints one JSON object; with ``--submit-only``, measures
submission against an endpoint that is not running, as probe_submit.py does for Volley.

Run by bench_upstream.py in its own process: upstream's module-level threads and its process-wide
state must not mix with ours.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from concurrent.futures import wait
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent / "tasks"))

import workload


def _client() -> Any:
    import globus_compute_sdk
    import globus_sdk
    from globus_compute_sdk.sdk.client import _ComputeWebClient

    url, token = os.environ["BENCH_SERVICE_URL"], os.environ["BENCH_TOKEN"]
    auth = globus_sdk.AccessTokenAuthorizer(token)
    client = globus_compute_sdk.Client(do_version_check=False, authorizer=auth)
    client._compute_web_client = _ComputeWebClient(base_url=url, authorizer=auth)
    client.web_service_address = url
    return client


def submit_only(n: int, endpoint: str) -> None:
    """Like probe_submit.py for upstream: N submit() calls to an endpoint that is not running;
    caller time, and process CPU until every future has its task id."""
    import globus_compute_sdk

    ex = globus_compute_sdk.Executor(endpoint_id=endpoint, client=_client(), task_group_id=uuid.uuid4())
    warm = [ex.submit(workload.echo, i, label="warm") for i in range(256)]
    _wait_task_ids(warm)
    cpu0, t0 = time.process_time(), time.perf_counter()
    futures = [ex.submit(workload.echo, i, label="x") for i in range(n)]
    t1 = time.perf_counter()
    _wait_task_ids(futures)
    cpu1, t2 = time.process_time(), time.perf_counter()
    print(json.dumps({
        "tasks": n, "caller_us_per_submit": (t1 - t0) / n * 1e6,
        "cpu_us_per_task": (cpu1 - cpu0) / n * 1e6, "acknowledged_seconds": t2 - t0,
        "sdk_version": globus_compute_sdk.__version__,
    }), flush=True)
    os._exit(0)  # the endpoint never runs these: do not wait for them at exit


def _wait_task_ids(futures: list, timeout: float = 1800) -> None:
    deadline = time.monotonic() + timeout
    i = 0
    while i < len(futures):
        if futures[i].task_id is not None:
            i += 1
        elif futures[i].done():
            raise SystemExit(f"submission failed: {futures[i].exception()!r}")
        elif time.monotonic() > deadline:
            raise SystemExit(f"only {i} of {len(futures)} tasks acknowledged")
        else:
            time.sleep(0.005)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--submit-only", action="store_true")
    a = ap.parse_args()
    if a.submit_only:
        submit_only(a.n, a.endpoint)
        return
    import globus_compute_sdk

    client = _client()
    with globus_compute_sdk.Executor(endpoint_id=a.endpoint, client=client,
                                     task_group_id=uuid.uuid4()) as ex:
        ex.submit(workload.noop).result(timeout=120)  # warm-up: registration, watcher connection
        t0 = time.perf_counter()
        futures = [ex.submit(workload.noop) for _ in range(a.n)]
        t1 = time.perf_counter()
        done, pending = wait(futures, timeout=1800)
        elapsed = time.perf_counter() - t0
    failed = sum(f.exception() is not None for f in done)
    print(json.dumps({
        "tasks": a.n, "seconds": elapsed, "tasks_per_s": a.n / elapsed, "submit_seconds": t1 - t0,
        "unfinished": len(pending), "failed": failed,
        "sdk_version": globus_compute_sdk.__version__,
    }), flush=True)


if __name__ == "__main__":
    main()
