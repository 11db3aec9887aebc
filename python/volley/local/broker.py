"""A private RabbitMQ node: own node name, ports, data directory, epmd and TLS certificate.

It never touches a broker already running on the machine: the node has its own name, its own
Erlang port mapper (``ERL_EPMD_PORT``) and its own environment file, so Debian's
``/etc/rabbitmq`` settings do not leak in.  Users are loaded from a definitions file at boot
(no ``guest``), so the node is ready the moment its TLS listener accepts a login.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import quote

from volley.local.certs import ensure_tls_files
from volley.local.ports import free_port, port_open
from volley.private_files import private_dir, write_private
from volley.protocol.topology import MAX_MESSAGE_SIZE
from volley.supervise import DAEMON_UMASK, Supervised, SupervisorError

SERVER_BIN = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
CTL_BIN = Path("/usr/lib/rabbitmq/bin/rabbitmqctl")
# Tasks may run for a day or more before their delivery is acked (a result is published first),
# so the broker must not reclaim unacked deliveries after its 30-minute default.
CONSUMER_TIMEOUT_MS = 7 * 24 * 3600 * 1000
# The node refuses messages over MAX_MESSAGE_SIZE (16 MiB; RabbitMQ's default is 128 MiB): a
# publish above it closes the publisher's channel with 406 PRECONDITION_FAILED.  Why 16 MiB:
# see volley.protocol.topology.


class BrokerError(RuntimeError):
    pass


def missing_broker_message() -> str | None:
    if SERVER_BIN.exists() and CTL_BIN.exists():
        return None
    return (
        f"RabbitMQ is not installed ({SERVER_BIN} is missing). Install Debian's package: "
        "`sudo apt-get install rabbitmq-server` (or run `make setup`, which does it when allowed)."
    )


def password_hash(password: str) -> str:
    """RabbitMQ's ``rabbit_password_hashing_sha256`` format: base64(salt + sha256(salt + pw))."""
    salt = secrets.token_bytes(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


@dataclass
class BrokerInfo:
    node: str
    amqps_port: int
    dist_port: int
    epmd_port: int
    admin_user: str
    admin_password: str
    ca_file: str
    directory: str
    # HTTPS port of the management API, through which the service manages broker users
    management_port: int = 0

    def url(self, user: str | None = None, password: str | None = None) -> str:
        user = user or self.admin_user
        password = password or self.admin_password
        return f"amqps://{quote(user, safe='')}:{quote(password, safe='')}@localhost:{self.amqps_port}/%2F"


def _closes(port: int, within: float) -> bool:
    """Wait (up to ``within`` seconds) for nothing to listen on ``port`` any more."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not port_open(port, timeout=0.2):
            return True
        time.sleep(0.05)
    return False


class RabbitNode:
    """Files and processes of one private node under ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.info_file = directory / "broker.json"
        # the rabbitmq-server script (our pid file); it runs the Erlang VM, which writes
        # RABBITMQ_PID_FILE itself, and stops it on SIGTERM
        self.server = Supervised("RabbitMQ node", pidfile=directory / "server.pid", log=directory / "server.out",
                                 more_logs=lambda: sorted((directory / "log").glob("*.log")))

    # --- configuration --------------------------------------------------------------------
    def prepare(self) -> BrokerInfo:
        private_dir(self.dir)
        if self.info_file.exists():
            info = BrokerInfo(**json.loads(self.info_file.read_text()))
            # ports may have been taken while we were down: pick new ones, keep identity.  The
            # AMQPS port is kept whenever it can be -- every client, endpoint and the service know
            # it -- so a node that crashed a moment ago is given time to let it go
            if not self.running():
                if port_open(info.amqps_port) and not _closes(info.amqps_port, within=5.0):
                    info.amqps_port = free_port()
                if not info.management_port or port_open(info.management_port):
                    info.management_port = free_port()
                info.dist_port, info.epmd_port = free_port(), free_port()
        else:
            info = BrokerInfo(
                node=f"volley-{secrets.token_hex(4)}@localhost",
                amqps_port=free_port(),
                dist_port=free_port(),
                epmd_port=free_port(),
                management_port=free_port(),
                admin_user="volley-admin",
                admin_password=secrets.token_urlsafe(24),
                ca_file="",
                directory=str(self.dir),
            )
        tls = ensure_tls_files(self.dir / "tls")
        info.ca_file = str(tls["ca"])
        self._write_config(info, tls)
        write_private(self.info_file, json.dumps(asdict(info), indent=2))  # the admin password
        return info

    def _write_config(self, info: BrokerInfo, tls: dict[str, Path]) -> None:
        definitions = {
            "users": [
                {
                    "name": info.admin_user,
                    "password_hash": password_hash(info.admin_password),
                    "hashing_algorithm": "rabbit_password_hashing_sha256",
                    "tags": ["administrator"],
                }
            ],
            "vhosts": [{"name": "/"}],
            "permissions": [
                {"user": info.admin_user, "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}
            ],
        }
        defs = self.dir / "definitions.json"
        write_private(defs, json.dumps(definitions, indent=2))
        write_private(
            self.dir / "rabbitmq.conf",
            "\n".join(
                [
                    "listeners.tcp = none",
                    f"listeners.ssl.default = 127.0.0.1:{info.amqps_port}",
                    f"ssl_options.cacertfile = {tls['ca']}",
                    f"ssl_options.certfile = {tls['cert']}",
                    f"ssl_options.keyfile = {tls['key']}",
                    "ssl_options.verify = verify_none",
                    "ssl_options.fail_if_no_peer_cert = false",
                    "loopback_users = none",
                    f"load_definitions = {defs}",
                    f"consumer_timeout = {CONSUMER_TIMEOUT_MS}",
                    f"max_message_size = {MAX_MESSAGE_SIZE}",
                    # the management API (HTTPS on loopback only) is how the service creates
                    # per-user and per-endpoint broker users; its statistics are not needed
                    f"management.ssl.port = {info.management_port}",
                    "management.ssl.ip = 127.0.0.1",
                    f"management.ssl.cacertfile = {tls['ca']}",
                    f"management.ssl.certfile = {tls['cert']}",
                    f"management.ssl.keyfile = {tls['key']}",
                    "management_agent.disable_metrics_collector = true",
                    "log.console = false",
                    "log.file.level = info",
                    # the node's own log rotates like Volley's (volley.logfiles)
                    "log.file.rotation.size = 10485760",
                    "log.file.rotation.count = 5",
                    "",
                ]
            )
        )
        write_private(self.dir / "enabled_plugins", "[rabbitmq_management].\n")
        write_private(self.dir / "rabbitmq-env.conf", "# private node: settings come from the environment\n")
        write_private(self.dir / "advanced.config", "[].\n")

    def env(self, info: BrokerInfo) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            RABBITMQ_NODENAME=info.node,
            RABBITMQ_CONF_ENV_FILE=str(self.dir / "rabbitmq-env.conf"),
            RABBITMQ_CONFIG_FILE=str(self.dir / "rabbitmq"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.dir / "advanced.config"),
            RABBITMQ_MNESIA_BASE=str(self.dir / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.dir / "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.dir / "enabled_plugins"),
            RABBITMQ_DIST_PORT=str(info.dist_port),
            RABBITMQ_PID_FILE=str(self.dir / "rabbit.pid"),
            ERL_EPMD_PORT=str(info.epmd_port),
            ERL_EPMD_ADDRESS="127.0.0.1",
            HOME=str(self.dir),
        )
        return env

    # --- processes --------------------------------------------------------------------------
    def running(self) -> bool:
        return self.server.running()

    def start(self, info: BrokerInfo, timeout: float = 90.0) -> None:
        problem = missing_broker_message()
        if problem:
            raise BrokerError(problem)
        if self.running():
            return
        self.server.what = f"RabbitMQ node {info.node}"  # its name is known once prepared
        try:
            self.server.start(
                [str(SERVER_BIN)], env=self.env(info), cwd=self.dir, umask=DAEMON_UMASK, timeout=timeout,
                ready=lambda _pid: port_open(info.amqps_port) and _amqps_login(info) and _management_ready(info),
                waiting_for=f"accept AMQPS logins on port {info.amqps_port} and management requests on "
                            f"port {info.management_port}",
                stop_if_late=True, poll_s=0.25,
            )
        except SupervisorError as exc:
            self._stop_epmd(info)  # the VM starts it outside its session
            raise BrokerError(str(exc)) from None

    def stop(self, info: BrokerInfo, timeout: float = 60.0) -> None:
        if self.running():
            try:  # the node's own orderly shutdown first
                subprocess.run(
                    [str(CTL_BIN), "-n", info.node, "stop"],
                    env=self.env(info),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                pass
        self.server.stop(grace=10.0)
        self._stop_epmd(info)

    def _stop_epmd(self, info: BrokerInfo) -> None:
        epmd = shutil.which("epmd")
        if epmd is None:
            return
        env = self.env(info)
        # only our private epmd (own port) is asked to stop; the machine's epmd is untouched
        subprocess.run([epmd, "-port", str(info.epmd_port), "-kill"], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def _amqps_login(info: BrokerInfo) -> bool:
    import pika

    from volley.transport.pika_transport import connection_parameters

    try:
        conn = pika.BlockingConnection(connection_parameters(info.url(), ca_file=info.ca_file))
    except Exception:
        return False
    conn.close()
    return True


def _management_ready(info: BrokerInfo) -> bool:
    import requests

    if not info.management_port:
        return True  # a node prepared before the management API was enabled (see LocalStack)
    try:
        r = requests.get(
            f"https://localhost:{info.management_port}/api/whoami",
            auth=(info.admin_user, info.admin_password), verify=info.ca_file, timeout=2,
        )
    except requests.RequestException:
        return False
    return r.ok
