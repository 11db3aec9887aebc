"""The upstream ``globus_compute_sdk.Executor`` (4.19, bench environment only) pointed at our
service, as reference/sdk.md §9.4 describes: a static bearer token, ``_compute_web_client``
replaced to target the local URL, and ``SSL_CERT_FILE`` set by the caller so that upstream's
pika trusts the private broker's CA.  Runs N no-op tasks and prints one JSON object.

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

sys.path.insert(0, str(Path(__file__).resolve().parent / "tasks"))

import workload


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--endpoint", required=True)
    a = ap.parse_args()
    import globus_compute_sdk
    import globus_sdk
    from globus_compute_sdk.sdk.client import _ComputeWebClient

    url, token = os.environ["BENCH_SERVICE_URL"], os.environ["BENCH_TOKEN"]
    auth = globus_sdk.AccessTokenAuthorizer(token)
    client = globus_compute_sdk.Client(do_version_check=False, authorizer=auth)
    client._compute_web_client = _ComputeWebClient(base_url=url, authorizer=auth)
    client.web_service_address = url
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
