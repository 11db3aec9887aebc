"""Helpers for the endpoint tests: configure, start, stop and kill endpoints of the session stack.

Each endpoint a test starts runs ``python -m volley.endpoint NAME`` in its own session, so the
test can find — and clean up — everything it started (interchange, worker pools, mpiexec)
by session id, and nothing else.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from volley.endpoint import local
from volley.supervise import log_tail, session_members


def home() -> Path:
    return Path(os.environ["VOLLEY_HOME"])


def configure(name: str, config: str) -> Path:
    d = home() / "endpoints" / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.yaml").write_text(config)
    return d


@dataclass
class Running:
    name: str
    dir: Path
    proc: subprocess.Popen[bytes]

    @property
    def endpoint_id(self) -> str:
        return str(json.loads((self.dir / "endpoint.json").read_text())["endpoint_id"])

    @property
    def log(self) -> str:
        return (self.dir / "endpoint.log").read_text(errors="replace")


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def start(name: str, *, transport: str | None = None, timeout: float = 120.0) -> Running:
    d = home() / "endpoints" / name
    (d / "daemon.ready").unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "volley.endpoint", name]
    if transport:
        cmd += ["--transport", transport]
    out = open(d / "endpoint.log", "ab")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=d)
    out.close()
    ready = d / "daemon.ready"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"endpoint {name} exited with {proc.returncode}:\n{log_tail(d / 'endpoint.log')}")
        return ready.exists() and ready.read_text().strip() == str(proc.pid)

    wait_for(up, timeout, f"endpoint {name} to consume")
    return Running(name, d, proc)


def kill_session(sid: int) -> None:
    """SIGKILL every process of the session a test started (the agent and its children)."""
    for pid in session_members(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_for(lambda: not session_members(sid), 30, f"session {sid} to die")


def stop(ep: Running, timeout: float = 60.0) -> int:
    """SIGTERM the agent; return its exit code.  Anything it leaves behind is killed, and the
    test fails: a clean stop leaves nothing."""
    if ep.proc.poll() is None:
        ep.proc.send_signal(signal.SIGTERM)
    try:
        rc = ep.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        kill_session(ep.proc.pid)
        raise AssertionError(f"endpoint {ep.name} did not stop within {timeout}s:\n{log_tail(ep.dir / 'endpoint.log')}") from None
    # Parsl scales blocks in asynchronously: give its worker pools a moment to exit
    try:
        wait_for(lambda: not session_members(ep.proc.pid), 20, f"endpoint {ep.name}'s processes to exit")
    except AssertionError:
        left = [_cmdline(p) for p in session_members(ep.proc.pid)]
        kill_session(ep.proc.pid)
        raise AssertionError(f"endpoint {ep.name} left processes behind: {left}") from None
    return rc


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def stop_extra_endpoints(volley_home: Path) -> None:
    """Stop every endpoint in ``volley_home`` except the stack's default one."""
    root = volley_home / "endpoints"
    if not root.is_dir():
        return
    for d in root.iterdir():
        if d.name != "default" and d.is_dir() and local.is_running(d):
            local.stop(d)
