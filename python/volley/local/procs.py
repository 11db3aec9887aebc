"""Detached child processes of the local stack: start them in their own session, stop the group."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from volley.private_files import open_private_append, write_private

# The stack's daemons (broker, service, default endpoint) keep all their state under
# $VOLLEY_HOME; whatever they create there (RabbitMQ's data, the SQLite database and its -wal
# and -shm, logs, task directories) is owner-only from its creation.
DAEMON_UMASK = 0o077


def spawn(cmd: Sequence[str], *, env: Mapping[str, str], log: Path, pidfile: Path, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``cmd`` detached (own session, so it outlives the CLI), output appended to ``log``
    (0600), with umask 077."""
    with os.fdopen(open_private_append(log), "ab") as out:
        proc = subprocess.Popen(
            list(cmd), env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True, umask=DAEMON_UMASK,
        )
    write_private(pidfile, str(proc.pid), fsync=False)
    return proc


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text())
    except (OSError, ValueError):
        return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child counts as gone ...
        with open(f"/proc/{pid}/stat") as f:
            if f.read().split(") ", 1)[1][:1] != "Z":
                return True
    except OSError:
        return True
    try:  # ... once its other threads are gone too: until then it still holds its sockets
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except OSError:
        return False


def terminate_group(pid: int, grace: float) -> None:
    """SIGTERM the process group started for ``pid`` (its own session), then SIGKILL it."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            if not alive(pid) and not _groupalive(pid):
                return
            time.sleep(0.1)


def _groupalive(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) == pgid and alive(int(entry.name)):
                return True
        except (ProcessLookupError, PermissionError):
            continue
    return False


def log_tail(*paths: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of the given logs together (missing files are skipped), for
    error messages that show why a child process failed."""
    out: list[str] = []
    for path in paths:
        try:
            out.extend(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            continue
    return "\n".join(out[-lines:]) or "(no log)"
