"""Benchmarks 2 and 4: ``submit()`` cost and memory per outstanding future (probe_submit.py, one
fresh process per transport), against an endpoint of the native stack that is registered but
not running.  The transport is the SDK's: it carries the result stream of the task group."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from stacks import run_probe

PROBE = Path(__file__).resolve().parent / "probe_submit.py"


@pytest.mark.parametrize("transport", ("native", "python"))
def bench_submit(benchmark: Any, stacks: Any, sizes: Any, transport: str) -> None:
    stack = stacks.get("native")
    endpoint = stack.idle_endpoint()
    env = dict(os.environ, BENCH_SERVICE_URL=stack.service_url, BENCH_TOKEN=stack.token,
               BENCH_CA_FILE=stack.ca_file)
    out: dict[str, Any] = {}

    def run() -> None:
        out.update(run_probe(PROBE, "--transport", transport, "--n", str(sizes.submit_tasks),
                             "--endpoint", endpoint, env=env, timeout=1800, what="probe"))

    try:
        benchmark.pedantic(run, rounds=1, iterations=1)
    finally:
        stack.drop_idle_endpoints()  # deletes the endpoint and its queue of waiting tasks
    benchmark.extra_info.update(out)
