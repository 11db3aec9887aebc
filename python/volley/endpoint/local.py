"""Endpoints on this machine: their directories, config templates, state, and their processes.

``$VOLLEY_HOME/endpoints/NAME/`` holds ``config.yaml``, ``endpoint.json`` (the id the service
gave it), ``daemon.lock`` (held by the running agent: the authority on "running", immune to
stale pid files), ``daemon.pid`` (its one pid file: written when a detached agent is spawned,
and by the agent itself once it holds the lock), ``daemon.ready`` (the agent's pid, once it
consumes its task queue), ``endpoint.log`` (detached runs), ``unacked_results/``,
``tasks_working_dir/`` and, for Parsl engines, ``submit_scripts/`` and the executor's log
directory.  Detached agents are started and stopped by :mod:`volley.supervise`.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from volley.config import volley_home
from volley.private_files import private_dir
from volley.supervise import Supervised, read_pid

_BAD_NAME = re.compile(r"[\s/\\'\"]")

TEMPLATES = {
    "ThreadPoolEngine": """\
engine:
  type: ThreadPoolEngine
  max_workers: {workers}
""",
    "ProcessPoolEngine": """\
engine:
  type: ProcessPoolEngine
  max_workers: {workers}
""",
    "HighThroughputEngine": """\
engine:
  type: HighThroughputEngine        # Parsl HighThroughputExecutor (alias: GlobusComputeEngine)
  max_workers_per_node: {workers}
  max_retries_on_system_failure: 1
  provider:                         # any parsl.providers class, e.g. SlurmProvider, PBSProProvider
    type: LocalProvider
    init_blocks: 1
    min_blocks: 0
    max_blocks: 1
""",
    "MPIEngine": """\
engine:
  type: MPIEngine                   # Parsl MPI mode (alias: GlobusMPIEngine)
  max_workers_per_block: 1          # MPI applications running at once in a block
  mpi_launcher: mpiexec             # or srun, aprun
  provider:
    type: LocalProvider             # on a cluster: SlurmProvider / PBSProProvider, nodes_per_block: N
    launcher:
      type: SimpleLauncher          # required by MPI mode
    init_blocks: 1
    min_blocks: 0
    max_blocks: 1
""",
}


def check_name(name: str) -> None:
    if not name or len(name) > 128 or _BAD_NAME.search(name) or name.startswith(".") or ".." in name:
        raise ValueError(
            f"invalid endpoint name {name!r}: at most 128 characters, no whitespace, slashes or "
            "quotes, not starting with '.', no '..'"
        )


def endpoints_dir() -> Path:
    return volley_home() / "endpoints"


def endpoint_dir(name: str) -> Path:
    check_name(name)
    return endpoints_dir() / name


def render_config(engine_type: str, *, display_name: str | None = None, workers: int | None = None,
                  sandbox: bool = False, heartbeat_period: float | None = None) -> str:
    lines = ["# Volley endpoint configuration; every key is described in docs/endpoint.md"]
    lines.append(f"display_name: {json.dumps(display_name)}" if display_name else "display_name: null")
    lines.append(TEMPLATES[engine_type].format(workers=workers or max(2, os.cpu_count() or 2)).rstrip())
    if sandbox:
        lines.append("run_in_sandbox: true")
    lines.append(f"heartbeat_period: {heartbeat_period or 30}")
    return "\n".join(lines) + "\n"


def endpoint_id(directory: Path) -> str | None:
    try:
        return str(json.loads((directory / "endpoint.json").read_text())["endpoint_id"])
    except (OSError, ValueError, KeyError):
        return None


def is_running(directory: Path) -> bool:
    """True while an agent holds the directory's lock (a killed agent's lock is released)."""
    lock = directory / "daemon.lock"
    if not lock.exists():
        return False
    with open(lock, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def state(directory: Path) -> str:
    if is_running(directory):
        return "Running"
    return "Stopped" if endpoint_id(directory) else "Initialized"


def supervised(name: str, directory: Path) -> Supervised:
    return Supervised(f"endpoint {name!r}", pidfile=directory / "daemon.pid", log=directory / "endpoint.log")


def pid_of(directory: Path) -> int | None:
    return read_pid(directory / "daemon.pid")


def consuming(directory: Path, pid: int) -> bool:
    """True once agent ``pid`` consumes its task queue (it writes its pid to daemon.ready)."""
    return read_pid(directory / "daemon.ready") == pid


def list_endpoints() -> list[dict[str, Any]]:
    root = endpoints_dir()
    if not root.is_dir():
        return []
    out = []
    for d in sorted(root.iterdir()):
        if d.is_dir() and (d / "config.yaml").exists():
            out.append({"id": endpoint_id(d), "name": d.name, "state": state(d)})
    return out


def start_detached(name: str, directory: Path, *, transport: str | None = None, timeout: float = 120.0,
                   env: Mapping[str, str] | None = None, umask: int | None = None,
                   also_ready: Callable[[], bool] | None = None) -> int:
    """Start the agent in its own session, logging to endpoint.log; return its pid once it
    consumes its task queue (and ``also_ready()`` holds, when given)."""
    cmd = [sys.executable, "-m", "volley.endpoint", name]
    if transport:
        cmd += ["--transport", transport]
    private_dir(directory)  # one configured by an older Volley may be 0755
    (directory / "daemon.ready").unlink(missing_ok=True)

    def ready(pid: int) -> bool:
        return consuming(directory, pid) and (also_ready is None or also_ready())

    return supervised(name, directory).start(
        cmd, env=env, cwd=directory, umask=umask, timeout=timeout, ready=ready,
        waiting_for="start consuming its task queue" + (" and come online" if also_ready else ""),
    )


def stop(directory: Path, *, timeout: float = 60.0) -> bool:
    """SIGTERM the agent, give it ``timeout`` seconds to finish and to stop what it started,
    then SIGKILL it and whatever is left of its session.  False when it was not running."""
    if not is_running(directory) or pid_of(directory) is None:
        return False
    return supervised(directory.name, directory).stop(grace=timeout)
