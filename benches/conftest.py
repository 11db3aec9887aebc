"""Fixtures of the benchmark session: sizes, the stacks (started lazily, always stopped), and
the machine description that ``report.py`` prints at the top of docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sizes as _sizes
from stacks import TASKS_DIR, StackPool

# the remote functions are imported by module name here and on the endpoints alike
sys.path.insert(0, str(TASKS_DIR))

# The client side of each benchmark names its stack explicitly; nothing may leak in from a
# developer's shell (their own local stack, token or transport).
for _var in ("VOLLEY_SERVICE_URL", "VOLLEY_TOKEN", "VOLLEY_CA_FILE", "VOLLEY_ENDPOINT_ID", "VOLLEY_TRANSPORT"):
    os.environ.pop(_var, None)

TRANSPORTS = ("native", "python")

# Deliveries the bench endpoint may hold unacked.  The endpoint's default (2 x workers + 8) is
# measured separately (bench_end_to_end.bench_default_prefetch): with it the agent's task loop
# waits for its 0.2 s poll before acking, which caps throughput far below everything else.
BENCH_PREFETCH = int(os.environ.get("BENCH_ENDPOINT_PREFETCH", "4096"))


@pytest.fixture(scope="session")
def sizes() -> _sizes.Sizes:
    return _sizes.current()


@pytest.fixture(scope="session")
def stacks(sizes: _sizes.Sizes) -> Iterator[StackPool]:
    pool = StackPool(workers=sizes.endpoint_workers, prefetch=BENCH_PREFETCH)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(autouse=True)
def _stop_watchers() -> Iterator[None]:
    """Each benchmark starts from a process with no result watcher running."""
    yield
    from volley.sdk.watcher import all_watchers

    for w in all_watchers():
        w.shutdown()
        w.join(timeout=10)


def _cmd(*args: str) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _lock_version(crate: str) -> str:
    lock = Path(__file__).resolve().parents[1] / "Cargo.lock"
    try:
        lines = lock.read_text().splitlines()
    except OSError:
        return "?"
    for i, line in enumerate(lines):
        if line == f'name = "{crate}"' and i + 1 < len(lines):
            return lines[i + 1].split('"')[1]
    return "?"


def pytest_benchmark_update_machine_info(config: Any, machine_info: dict[str, Any]) -> None:
    import volley
    import volley._core

    mem_kib = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    machine_info["volley"] = {
        "mode": _sizes.current().mode,
        "cpu_model": _cpu_model(),
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "loadavg_at_start": os.getloadavg(),
        "versions": {
            "volley": volley.__version__,
            "volley._core": volley._core.__version__,
            "python": platform.python_version(),
            "rustc": _cmd("rustc", "--version"),
            "rabbitmq-server": _cmd("dpkg-query", "-W", "-f=${Version}", "rabbitmq-server"),
            "lapin": _lock_version("lapin"),
            "pyo3": _lock_version("pyo3"),
            "pika": _version("pika"),
            "dill": _version("dill"),
            "globus-compute-sdk (anchor)": _version("globus-compute-sdk"),
            "globus-compute-common (anchor)": _version("globus-compute-common"),
            "pytest-benchmark": _version("pytest-benchmark"),
        },
        "endpoint": {"engine": "ThreadPoolEngine", "max_workers": _sizes.current().endpoint_workers,
                     "prefetch": BENCH_PREFETCH},
    }
