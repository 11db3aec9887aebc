"""volley.supervise with real processes: one pid file, readiness with the log in its errors,
and a stop that leaves nothing of the daemon's session."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from volley.supervise import Supervised, SupervisorError, alive, read_pid, session_members

# A daemon that starts a helper in a process group of its own (as Parsl's interchange does)
# which ignores SIGTERM, writes the helper's pid, then says it is ready and waits to be stopped.
DAEMON = textwrap.dedent("""
    import os, signal, subprocess, sys, time
    helper = subprocess.Popen([sys.executable, "-c",
        "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); os.setpgrp(); time.sleep(600)"])
    open("helper.pid", "w").write(str(helper.pid))
    print("daemon up", flush=True)
    open("ready", "w").write(str(os.getpid()))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    time.sleep(600)
""")


def _daemon(tmp_path: Path) -> Supervised:
    return Supervised("test daemon", pidfile=tmp_path / "daemon.pid", log=tmp_path / "daemon.log")


def _ready(tmp_path: Path):  # type: ignore[no-untyped-def]
    return lambda pid: read_pid(tmp_path / "ready") == pid


def test_start_writes_one_private_pid_file_and_stop_empties_the_session(tmp_path: Path) -> None:
    d = _daemon(tmp_path)
    old = os.umask(0)  # the worst case: files get exactly the mode they are created with
    try:
        pid = d.start([sys.executable, "-c", DAEMON], cwd=tmp_path, ready=_ready(tmp_path),
                      waiting_for="write its ready file", timeout=60)
    finally:
        os.umask(old)
    helper = read_pid(tmp_path / "helper.pid")
    assert helper is not None
    try:
        _check_running_then_stop(d, pid, helper)
    finally:  # whatever a failed check left behind
        for p in (pid, helper):
            if alive(p):
                os.kill(p, signal.SIGKILL)


def _check_running_then_stop(d: Supervised, pid: int, helper: int) -> None:
    assert read_pid(d.pidfile) == pid and d.running()
    assert sorted(p.name for p in d.pidfile.parent.glob("*.pid")) == ["daemon.pid", "helper.pid"]
    assert stat.S_IMODE(d.pidfile.stat().st_mode) == 0o600 and stat.S_IMODE(d.log.stat().st_mode) == 0o600
    assert "daemon up" in d.tail()
    assert set(session_members(pid)) == {pid, helper}  # the helper left the group, not the session

    assert d.stop(grace=2.0) is True
    assert not alive(pid) and not alive(helper) and session_members(pid) == []
    assert not d.pidfile.exists() and not d.running()
    assert d.stop() is False


def test_a_daemon_that_exits_while_starting_is_reported_with_its_log(tmp_path: Path) -> None:
    d = _daemon(tmp_path)
    with pytest.raises(SupervisorError) as info:
        d.start([sys.executable, "-c", "import sys; print('bad setting: port'); sys.exit(7)"],
                ready=lambda _pid: False, waiting_for="answer", timeout=60)
    text = str(info.value)
    assert "test daemon exited with code 7 while starting" in text
    assert str(d.log) in text and text.endswith("bad setting: port")
    assert not d.pidfile.exists()  # it names no one


def test_a_late_daemon_is_stopped_or_left_running_as_asked(tmp_path: Path) -> None:
    late = "print('still booting', flush=True); import time; time.sleep(600)"
    d = _daemon(tmp_path)
    with pytest.raises(SupervisorError) as info:
        d.start([sys.executable, "-c", late], ready=lambda _pid: False, waiting_for="answer on port 1",
                timeout=1, stop_if_late=True)
    assert "test daemon did not answer on port 1 within 1s; it was stopped" in str(info.value)
    assert str(info.value).endswith("still booting")
    assert not d.pidfile.exists()

    try:
        with pytest.raises(SupervisorError) as info:
            d.start([sys.executable, "-c", late], ready=lambda _pid: False, waiting_for="answer on port 1",
                    timeout=1)
        pid = read_pid(d.pidfile)
        assert pid is not None and alive(pid)
        assert f"it is still running as pid {pid}" in str(info.value)
    finally:
        assert d.stop(grace=5.0)
    assert not alive(pid)


def test_a_start_that_loses_a_race_gives_the_pid_file_back(tmp_path: Path) -> None:
    d = _daemon(tmp_path)
    winner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    try:
        d.pidfile.write_text(str(winner.pid))
        with pytest.raises(SupervisorError, match="exited with code 3"):
            d.start([sys.executable, "-c", "import sys; sys.exit(3)"], ready=lambda _pid: False,
                    waiting_for="take the lock", timeout=60)
        assert read_pid(d.pidfile) == winner.pid
    finally:
        winner.kill()
        winner.wait(timeout=10)
