"""The local stack: status JSON, TLS-only broker, idempotent up, and a down that leaves nothing."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest

from volley.local.stack import LocalStack
from volley.supervise import alive, read_pid
from volley.transport.pika_transport import connection_parameters


def volley_cli(*args: str, home: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, VOLLEY_HOME=home)
    return subprocess.run([sys.executable, "-m", "volley.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_status_json_reports_running_stack(stack: dict[str, Any]) -> None:
    proc = volley_cli("local", "status", "--json", home=stack["state_dir"])
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert status["running"] is True
    assert status["endpoint_id"] == stack["endpoint_id"]
    assert isinstance(status["amqps_port"], int)
    assert status["state_dir"] == stack["state_dir"]
    assert status["service_url"].startswith("http://127.0.0.1:")


def test_broker_speaks_only_tls_with_our_ca(stack: dict[str, Any]) -> None:
    port = stack["amqps_port"]
    ctx = ssl.create_default_context(cafile=stack["ca_file"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() is not None  # handshake verified against the generated CA
    # a plain AMQP client is refused: there is no non-TLS listener on that port
    plain = pika.URLParameters(f"amqp://guest:guest@127.0.0.1:{port}/%2F")
    plain.socket_timeout = plain.blocked_connection_timeout = 3
    plain.connection_attempts = 1
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(plain)


def test_broker_refuses_wrong_password(stack: dict[str, Any]) -> None:
    url = f"amqps://volley-admin:wrong@localhost:{stack['amqps_port']}/%2F"
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(connection_parameters(url, ca_file=stack["ca_file"]))


def test_up_is_idempotent(stack: dict[str, Any]) -> None:
    home = Path(stack["state_dir"])
    pids = [read_pid(home / p) for p in ("broker/server.pid", "service/service.pid", "endpoints/default/daemon.pid")]
    again = LocalStack(home).up()
    assert again["running"] and again["endpoint_id"] == stack["endpoint_id"]
    assert [read_pid(home / p) for p in ("broker/server.pid", "service/service.pid", "endpoints/default/daemon.pid")] == pids


def _processes_under(home: Path) -> list[str]:
    """Command lines of live processes that mention this state directory."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if str(home) in cmd or str(home).encode() in environ:
            if alive(int(entry.name)):
                found.append(f"{entry.name}: {cmd[:120]}")
    return found


def test_down_leaves_no_process(tmp_path: Path) -> None:
    home = tmp_path / "home"
    up = volley_cli("local", "up", "--json", home=str(home))
    assert up.returncode == 0, up.stderr
    status = json.loads(up.stdout)
    assert status["running"] is True and isinstance(status["amqps_port"], int)
    assert _processes_under(home), "expected the stack's processes to be running"
    down = volley_cli("local", "down", home=str(home))
    assert down.returncode == 0, down.stderr
    assert _processes_under(home) == []
    after = json.loads(volley_cli("local", "status", "--json", home=str(home)).stdout)
    assert after["running"] is False
