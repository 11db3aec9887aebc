"""Benchmarks 2 and 4: ``submit()`` cost and memory per outstanding future (probe_submit.py, one
fresh process per transport), against an endpoint of the native stack that is registered but
not running.  The transport is the SDK's: it carries the result stream of the task group."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

PROBE = Path(__file__).resolve().parent / "probe_submit.py"


@pytest.mark.parametrize("transport", ("native", "python"))
def bench_submit(benchmark: Any, stacks: Any, sizes: Any, transport: str) -> None:
    stack = stacks.get("native")
    endpoint = stack.idle_endpoint()
    env = dict(os.environ, BENCH_SERVICE_URL=stack.service_url, BENCH_TOKEN=stack.token,
               BENCH_CA_FILE=stack.ca_file)
    out: dict[str, Any] = {}

    def run() -> None:
        proc = subprocess.run(
            [sys.executable, str(PROBE), "--transport", transport, "--n", str(sizes.submit_tasks),
             "--endpoint", endpoint],
            env=env, capture_output=True, text=True, timeout=1800,
        )
        if proc.returncode != 0 or not proc.stdout.strip():
            raise RuntimeError(f"probe failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-4000:]}")
        out.update(json.loads(proc.stdout.strip().splitlines()[-1]))

    try:
        benchmark.pedantic(run, rounds=1, iterations=1)
    finally:
        stack.drop_idle_endpoints()  # deletes the endpoint and its queue of waiting tasks
    benchmark.extra_info.update(out)
