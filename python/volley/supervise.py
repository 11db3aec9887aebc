"""Detached daemons: start one in its own session with its own log, wait until it is ready,
stop its whole session, show the end of its log.

The local stack runs its broker, service and default endpoint this way, and ``volley endpoint
start --detach|stop|restart`` its endpoints.  Each daemon has exactly one pid file, written the
moment it is spawned, so a stop that comes while it is still starting finds it.  The daemon is
the leader of a new session: everything it starts (RabbitMQ's Erlang VM, a worker pool, a
Parsl interchange that put itself in a process group of its own) stays in that session, and
stopping the daemon waits until the session is empty.

A daemon's output goes to its log, and ``$VOLLEY_LOG_FILE`` names that log: Volley's own
programs then log through a rotating handler (:mod:`volley.logfiles`), so the file stays within
its size; other programs (RabbitMQ) ignore the variable.

Only the standard library, :mod:`volley.private_files` and :mod:`volley.logfiles` are imported
here: the endpoint's CLI uses this module without importing the service.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from volley.logfiles import LOG_FILE_ENV
from volley.private_files import open_private_append, write_private

# The local stack's daemons keep all their state under $VOLLEY_HOME; whatever they create there
# (RabbitMQ's data, the SQLite database and its -wal and -shm, logs, task directories) is
# owner-only from its creation.
DAEMON_UMASK = 0o077
# After SIGKILL: how long the kernel may take to let a session's processes go.
KILL_WAIT_S = 10.0


class SupervisorError(RuntimeError):
    """A daemon exited while starting, or was not ready in time; the text names its log and
    ends with the log's last lines."""


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name: state, ppid, pgrp, session, ..."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _holds_resources(pid: int, state: str) -> bool:
    """A zombie counts as gone once its other threads are gone too: after SIGKILL, RabbitMQ's
    main thread is a zombie while its other threads still exit, and until the last one is
    gone its sockets stay open (a restart that took the port for free would move it)."""
    if state not in ("Z", "X"):
        return True
    try:
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except OSError:
        return False


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _stat_fields(pid)
    return fields is None or _holds_resources(pid, fields[0])


def session_members(sid: int) -> list[int]:
    """Live processes of session ``sid`` (the pid of the daemon that leads it), this one
    excluded."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        fields = _stat_fields(int(entry.name))
        try:
            if fields is not None and int(fields[3]) == sid and _holds_resources(int(entry.name), fields[0]):
                members.append(int(entry.name))
        except (ValueError, IndexError):
            continue
    return members


def log_tail(*paths: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of the given logs together (missing files are skipped), for
    error messages that show why a daemon failed."""
    out: list[str] = []
    for path in paths:
        try:
            out.extend(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            continue
    return "\n".join(out[-lines:]) or "(no log)"


def _no_logs() -> Iterable[Path]:
    return ()


class Supervised:
    """One daemon: its pid file and log, and how to start, stop and read it.

    ``what`` names it in messages ("the service", "endpoint 'default'"); ``more_logs`` gives
    further logs it writes itself (RabbitMQ's), shown after its output in error messages."""

    def __init__(self, what: str, *, pidfile: Path, log: Path,
                 more_logs: Callable[[], Iterable[Path]] = _no_logs) -> None:
        self.what = what
        self.pidfile = pidfile
        self.log = log
        self.more_logs = more_logs

    def pid(self) -> int | None:
        return read_pid(self.pidfile)

    def running(self) -> bool:
        pid = self.pid()
        return pid is not None and alive(pid)

    def logs(self) -> list[Path]:
        return [self.log, *self.more_logs()]

    def tail(self, lines: int = 20) -> str:
        return log_tail(*self.logs(), lines=lines)

    def _see_logs(self) -> str:
        return f"see {', '.join(str(p) for p in self.logs())}:\n{self.tail()}"

    def start(self, cmd: Sequence[str], *, ready: Callable[[int], bool], waiting_for: str, timeout: float,
              env: Mapping[str, str] | None = None, cwd: Path | None = None, umask: int | None = None,
              stop_if_late: bool = False, poll_s: float = 0.1) -> int:
        """Spawn ``cmd`` and return its pid once ``ready(pid)`` holds.

        Its output is appended to the log (created 0600), which ``$VOLLEY_LOG_FILE`` names to
        it (see :mod:`volley.logfiles`); ``umask`` (default: this process's)
        applies to everything it creates.  If it exits first, or ``ready`` does not hold within
        ``timeout`` seconds, :class:`SupervisorError` says so with the log's tail; a late daemon
        is stopped with ``stop_if_late``, else left running (the message gives its pid).
        ``waiting_for`` completes "did not ..." in that message."""
        previous = self.pidfile.read_text() if self.pidfile.exists() else None
        child_env = dict(os.environ if env is None else env)
        child_env[LOG_FILE_ENV] = str(self.log)
        with os.fdopen(open_private_append(self.log), "ab") as out:
            proc = subprocess.Popen(
                list(cmd), env=child_env, cwd=cwd, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                umask=-1 if umask is None else umask,
            )
        write_private(self.pidfile, str(proc.pid), fsync=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self._forget(proc.pid, previous)
                raise SupervisorError(
                    f"{self.what} exited with code {proc.returncode} while starting; {self._see_logs()}"
                )
            if ready(proc.pid):
                return proc.pid
            time.sleep(poll_s)
        if stop_if_late:
            self.stop(grace=10.0)
            fate = "it was stopped"
        else:
            fate = f"it is still running as pid {proc.pid}"
        raise SupervisorError(
            f"{self.what} did not {waiting_for} within {timeout:.0f}s; {fate}; {self._see_logs()}"
        )

    def _forget(self, pid: int, previous: str | None) -> None:
        """After a failed start: drop the pid file that names the dead daemon, or give back
        the one it replaced when that still names a live process (another instance that won a
        race the dead one lost)."""
        if read_pid(self.pidfile) != pid:
            return
        try:
            old = int(previous) if previous is not None else None
        except ValueError:
            old = None
        if old is not None and alive(old):
            write_private(self.pidfile, str(old), fsync=False)
        else:
            self.pidfile.unlink(missing_ok=True)

    def stop(self, grace: float = 20.0) -> bool:
        """SIGTERM the daemon and wait up to ``grace`` seconds until it and its session are gone
        (it stops its own children), then SIGKILL it and whatever is left of the session.  The pid file
        is removed.  False when it was not running."""
        pid = self.pid()
        if pid is None:
            return False
        was_running = alive(pid) or bool(session_members(pid))
        if was_running:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            if not self._wait_gone(pid, grace):
                # the daemon first: one started in the foreground does not lead a session
                for member in (pid, *session_members(pid)):
                    try:
                        os.kill(member, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                self._wait_gone(pid, KILL_WAIT_S)
        if read_pid(self.pidfile) == pid:  # not a newer daemon's
            self.pidfile.unlink(missing_ok=True)
        return was_running

    @staticmethod
    def _wait_gone(pid: int, within: float) -> bool:
        deadline = time.monotonic() + within
        while True:
            try:
                os.waitpid(pid, os.WNOHANG)  # reap it if this process started it
            except ChildProcessError:
                pass
            if not alive(pid) and not session_members(pid):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
