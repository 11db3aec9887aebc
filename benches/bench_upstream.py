"""Benchmark 5: upstream anchors, in the same run.  The upstream packages are installed only in the
bench/test environment; Volley's runtime never imports them.

* ``bench_decode[...]``: one packed ``Result`` → a usable message, per result: upstream's
  ``globus_compute_common.messagepack.unpack`` (JSON + pydantic) against our Rust
  (``volley._core.decode``) and pure-Python (``volley.protocol.messages.decode``) codecs;
* ``bench_serialize_task[...]``: what ``Batch.add`` does per task (serialize args and kwargs,
  pack the buffers), upstream's ``ComputeSerializer`` against ours;
* ``bench_upstream_executor``: upstream's ``Executor`` pointed at our service (native stack),
  the same no-op tasks as the end-to-end benchmark, in its own process;
* ``bench_upstream_submit``: upstream's ``submit()`` cost, measured as bench_submission.py
  measures ours (an endpoint that is not running; CPU until every task id is known).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from stacks import run_probe

from volley.protocol.messages import pack_result

HERE = Path(__file__).resolve().parent
BODIES = 1_000  # per timed call: per-result figures are mean / BODIES


def _bodies() -> list[bytes]:
    from volley.serialize import ComputeSerializer

    data = ComputeSerializer().serialize(None)
    return [pack_result(str(uuid.uuid4()), data) for _ in range(BODIES)]


def _decoder(which: str) -> Any:
    if which == "upstream":
        from globus_compute_common import messagepack

        return messagepack.unpack
    if which == "volley-native":
        from volley import _core

        return _core.decode
    from volley.protocol import messages

    return messages.decode


@pytest.mark.parametrize("which", ("volley-native", "volley-python", "upstream"))
def bench_decode(benchmark: Any, which: str) -> None:
    bodies, decode = _bodies(), _decoder(which)

    def run() -> None:
        for b in bodies:
            decode(b)

    benchmark.pedantic(run, rounds=30, iterations=1, warmup_rounds=2)
    benchmark.extra_info.update(which=which, per_call=BODIES,
                                us_per_result=benchmark.stats.stats.median / BODIES * 1e6)


def _serializer(which: str) -> Any:
    if which == "upstream":
        from globus_compute_sdk.serialize import ComputeSerializer as Upstream

        return Upstream()
    from volley.serialize import ComputeSerializer

    return ComputeSerializer()


@pytest.mark.parametrize("which", ("volley", "upstream"))
def bench_serialize_task(benchmark: Any, which: str) -> None:
    ser = _serializer(which)
    args, kwargs = (7, "small"), {"label": "x"}

    def run() -> None:
        for _ in range(BODIES):
            ser.pack_buffers([ser.serialize(args), ser.serialize(kwargs)])

    benchmark.pedantic(run, rounds=20, iterations=1, warmup_rounds=2)
    benchmark.extra_info.update(which=which, per_call=BODIES,
                                us_per_task=benchmark.stats.stats.median / BODIES * 1e6)


def bench_upstream_executor(benchmark: Any, stacks: Any, sizes: Any) -> None:
    pytest.importorskip("globus_compute_sdk")
    stack = stacks.get("native")
    env = dict(os.environ, BENCH_SERVICE_URL=stack.service_url, BENCH_TOKEN=stack.token,
               SSL_CERT_FILE=stack.ca_file)
    out: dict[str, Any] = {}

    def run() -> None:
        out.update(run_probe(HERE / "upstream_executor.py", "--n", str(sizes.upstream_e2e_tasks),
                             "--endpoint", stack.endpoint_id, env=env, timeout=3600,
                             what="upstream Executor"))

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(out, against="volley service, native stack")


def bench_upstream_submit(benchmark: Any, stacks: Any, sizes: Any) -> None:
    """Upstream's submission cost, measured like bench_submission.py measures ours."""
    pytest.importorskip("globus_compute_sdk")
    stack = stacks.get("native")
    endpoint = stack.idle_endpoint()
    env = dict(os.environ, BENCH_SERVICE_URL=stack.service_url, BENCH_TOKEN=stack.token,
               SSL_CERT_FILE=stack.ca_file)
    out: dict[str, Any] = {}

    def run() -> None:
        out.update(run_probe(HERE / "upstream_executor.py", "--submit-only", "--n", str(sizes.submit_tasks),
                             "--endpoint", endpoint, env=env, timeout=3600, what="upstream Executor"))

    try:
        benchmark.pedantic(run, rounds=1, iterations=1)
    finally:
        stack.drop_idle_endpoints()
    benchmark.extra_info.update(out, against="volley service, native stack, endpoint not running")
