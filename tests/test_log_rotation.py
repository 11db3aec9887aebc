"""Daemons' log files rotate: past ``$VOLLEY_LOG_MAX_BYTES`` the log becomes ``<log>.1`` and a new
one begins, keeping ``$VOLLEY_LOG_BACKUPS`` old files; output that bypasses logging follows the
rotation; every file stays 0600.  Real processes: a daemon started by the supervisor, and a
detached endpoint of the session's stack whose tasks log."""

from __future__ import annotations

import logging
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

import endpoint_helpers as eh
from test_endpoint_lifecycle import FAST
from volley import Executor
from volley.endpoint import local
from volley.logfiles import BACKUPS_ENV, MAX_BYTES_ENV, rotation_limits
from volley.supervise import Supervised

MAX_BYTES = 4096
LINE = "x" * 100

PROGRAM = f"""
import logging, os, sys
from pathlib import Path
from volley.logfiles import configure_logging
assert configure_logging() is not None
assert "VOLLEY_LOG_FILE" not in os.environ  # not handed down to children
for i in range(300):
    logging.getLogger("volley.test").warning("line %d {LINE}", i)
print("printed after the rotations", file=sys.stderr, flush=True)
logging.getLogger("volley.test").warning("the last line")
Path(sys.argv[1]).write_text("done")
import time
time.sleep(120)
"""


def _files(log: Path) -> dict[str, Path]:
    return {p.name: p for p in log.parent.glob(log.name + "*")}


def _check_rotated(log: Path, backups: int) -> None:
    files = _files(log)
    assert set(files) == {log.name, *(f"{log.name}.{i}" for i in range(1, backups + 1))}, sorted(files)
    for p in files.values():
        # a line may carry the file past the limit by itself; never by more
        assert p.stat().st_size <= MAX_BYTES + 512, (p, p.stat().st_size)
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p


def test_a_supervised_daemon_rotates_its_log_and_its_stderr_follows(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MAX_BYTES_ENV, str(MAX_BYTES))
    monkeypatch.setenv(BACKUPS_ENV, "2")
    log, done = tmp_path / "daemon.log", tmp_path / "done"
    daemon = Supervised("a test daemon", pidfile=tmp_path / "daemon.pid", log=log)
    daemon.start([sys.executable, "-c", PROGRAM, str(done)], ready=lambda _pid: done.exists(),
                 waiting_for="log its lines", timeout=60)
    try:
        _check_rotated(log, 2)
        current = log.read_text()
        assert "printed after the rotations" in current and "the last line" in current
        assert "line 299" in (current + (tmp_path / "daemon.log.1").read_text())
    finally:
        daemon.stop(grace=10)


def test_bad_rotation_settings_are_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MAX_BYTES_ENV, "ten megabytes")
    with pytest.raises(ValueError, match=MAX_BYTES_ENV):
        rotation_limits()
    monkeypatch.setenv(MAX_BYTES_ENV, "100")
    with pytest.raises(ValueError, match=f"{MAX_BYTES_ENV} must be at least 1024"):
        rotation_limits()
    monkeypatch.delenv(MAX_BYTES_ENV)
    monkeypatch.setenv(BACKUPS_ENV, "0")
    with pytest.raises(ValueError, match=BACKUPS_ENV):
        rotation_limits()


def chatty(n: int) -> int:
    for i in range(n):
        logging.getLogger("user.task").warning("task line %d %s", i, "y" * 100)
    return n


def test_a_detached_endpoint_log_rotates(stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    name = "ep-log-rotation"
    d = eh.configure(name, "engine: {type: ThreadPoolEngine, max_workers: 1}\n" + FAST)
    env = {**os.environ, MAX_BYTES_ENV: str(MAX_BYTES), BACKUPS_ENV: "3"}
    local.start_detached(name, d, env=env)
    try:
        eid = local.endpoint_id(d)
        with Executor(endpoint_id=eid) as ex:
            assert ex.submit(chatty, 400).result(timeout=60) == 400
        log = d / "endpoint.log"
        _check_rotated(log, 3)
        assert "task line 399" in log.read_text() + (d / "endpoint.log.1").read_text()
    finally:
        assert local.stop(d)
