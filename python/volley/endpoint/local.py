"""Endpoints on this machine: their directories, config templates, state, and their processes.

``$VOLLEY_HOME/endpoints/NAME/`` holds ``config.yaml``, ``endpoint.json`` (the id the service
gave it), ``daemon.lock`` (held by the running agent: the authority on "running", immune to
stale pid files), ``daemon.pid``, ``daemon.ready``, ``endpoint.log`` (detached runs),
``unacked_results/``, ``tasks_working_dir/`` and, for Parsl engines, ``submit_scripts/`` and
the executor's log directory.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from volley.config import volley_home
from volley.private_files import open_private_append, private_dir

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


def pid_of(directory: Path) -> int | None:
    try:
        return int((directory / "daemon.pid").read_text())
    except (OSError, ValueError):
        return None


def list_endpoints() -> list[dict[str, Any]]:
    root = endpoints_dir()
    if not root.is_dir():
        return []
    out = []
    for d in sorted(root.iterdir()):
        if d.is_dir() and (d / "config.yaml").exists():
            out.append({"id": endpoint_id(d), "name": d.name, "state": state(d)})
    return out


def _session_members(sid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields after the command: state ppid pgrp session ...
        if int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def start_detached(name: str, directory: Path, *, transport: str | None = None, timeout: float = 120.0,
                   env: dict[str, str] | None = None) -> int:
    """Start the agent in its own session, log to endpoint.log; wait until it consumes."""
    cmd = [sys.executable, "-m", "volley.endpoint", name]
    if transport:
        cmd += ["--transport", transport]
    private_dir(directory)  # one configured by an older Volley may be 0755
    log = directory / "endpoint.log"
    (directory / "daemon.ready").unlink(missing_ok=True)
    with os.fdopen(open_private_append(log), "ab") as out:  # task output lands here: 0600
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=directory, env=env)
    deadline = time.monotonic() + timeout
    ready = directory / "daemon.ready"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"endpoint {name!r} exited with code {proc.returncode} at start:\n{tail(log)}")
        try:
            if ready.read_text().strip() == str(proc.pid):
                return proc.pid
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"endpoint {name!r} (pid {proc.pid}) did not start consuming within {timeout:.0f}s; see {log}")


def stop(directory: Path, *, timeout: float = 60.0) -> bool:
    """SIGTERM the agent, wait for it to let go of its lock, then SIGKILL it and whatever it
    started in its session.  False when it was not running."""
    pid = pid_of(directory)
    if not is_running(directory) or pid is None:
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and is_running(directory):
        time.sleep(0.1)
    if is_running(directory):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        while is_running(directory):
            time.sleep(0.1)
    # A detached agent leads its own session: whatever is still in it (a worker pool that
    # has not finished scaling in, or everything after a SIGKILL) was started by it.
    deadline = time.monotonic() + 10
    while _session_members(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    for member in _session_members(pid):
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return True


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
