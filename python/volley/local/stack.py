"""``volley local up|down|status``: the embedded stack under ``$VOLLEY_HOME``.

Layout::

    $VOLLEY_HOME/config.json             client configuration (service URL, token, CA, endpoint id)
    $VOLLEY_HOME/broker/                 private RabbitMQ node (certs in broker/tls/)
    $VOLLEY_HOME/service/                settings, SQLite database, log, pid
    $VOLLEY_HOME/endpoints/default/      default endpoint (process-pool engine)

Each part is a daemon of volley.supervise: one pid file, its own log and session.  ``up`` is
idempotent (it starts only what is not running); ``down`` stops only what ``up`` started,
newest first, and waits until each session is gone.  The first user and token come from the
service's own function (volley.service.auth.issue_token), as for `volley token create`.

All of it is private: directories 0700 and files 0600, created with that mode (see
volley.private_files); the daemons run with umask 077 (volley.supervise.DAEMON_UMASK).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from volley.config import ClientConfig, volley_home
from volley.endpoint import local as endpoints
from volley.local.broker import BrokerInfo, RabbitNode
from volley.local.ports import can_bind, free_port
from volley.private_files import private_dir, private_file, write_private
from volley.supervise import DAEMON_UMASK, Supervised, SupervisorError

DEFAULT_ENDPOINT = "default"
DEFAULT_ENDPOINT_CONFIG = """\
# The local stack's default endpoint (see docs/endpoint.md for every key).
display_name: Volley local default endpoint
engine:
  type: ProcessPoolEngine
  max_workers: {workers}
heartbeat_period: 5
"""


class StackError(RuntimeError):
    pass


def _quiet(_msg: str) -> None:
    pass


class LocalStack:
    def __init__(self, home: Path | None = None, *, progress: Callable[[str], None] = _quiet) -> None:
        self.home = (home or volley_home()).resolve()
        self.progress = progress
        self.broker = RabbitNode(self.home / "broker")
        self.service_dir = self.home / "service"
        self.service = Supervised("the service", pidfile=self.service_dir / "service.pid",
                                  log=self.service_dir / "service.log")
        self.endpoint_dir = self.home / "endpoints" / DEFAULT_ENDPOINT

    # --- helpers ------------------------------------------------------------------------------
    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["VOLLEY_HOME"] = str(self.home)
        for var in ("VOLLEY_SERVICE_URL", "VOLLEY_TOKEN", "VOLLEY_CA_FILE", "VOLLEY_ENDPOINT_ID"):
            env.pop(var, None)  # children read the stack's own configuration
        return env

    def _service_settings_path(self) -> Path:
        return self.service_dir / "service.json"

    def _service_settings(self) -> dict[str, Any] | None:
        p = self._service_settings_path()
        return json.loads(p.read_text()) if p.exists() else None

    # --- up -----------------------------------------------------------------------------------
    def up(self, timeout: float = 120.0) -> dict[str, Any]:
        private_dir(self.home)
        info = self._up_broker()
        cfg = self._up_service(info, timeout)
        self._up_endpoint(cfg, timeout)
        return self.status()

    def _up_broker(self) -> BrokerInfo:
        info = self.broker.prepare() if not self.broker.running() else BrokerInfo(
            **json.loads(self.broker.info_file.read_text())
        )
        if self.broker.running():
            if not info.management_port:
                raise StackError(
                    f"the running broker {info.node} was started by an older Volley without the "
                    "management API the service needs; run `volley local down`, then `volley local up`"
                )
            self.progress(f"broker: already running ({info.node}, AMQPS port {info.amqps_port})")
            return info
        self.progress(f"broker: starting private RabbitMQ node {info.node} on AMQPS port {info.amqps_port} ...")
        t0 = time.monotonic()
        self.broker.start(info)
        self.progress(f"broker: ready in {time.monotonic() - t0:.1f}s")
        return info

    def _up_service(self, info: BrokerInfo, timeout: float) -> ClientConfig:
        private_dir(self.service_dir)
        settings = self._service_settings() or {}
        settings.update(
            database_url=f"sqlite:///{self.service_dir / 'service.db'}",
            broker_url=info.url(),
            broker_management_url=f"https://localhost:{info.management_port}",
            ca_file=info.ca_file,
            host="127.0.0.1",
        )
        # broker passwords of users and endpoints derive from this key: keep it across restarts
        settings.setdefault("secret_key", secrets.token_urlsafe(32))
        settings.pop("public_broker_url", None)  # the admin URL is never handed out
        running = self.service.running()
        if not running:
            # a restart keeps the service's address: clients, endpoints and config files that
            # know it ride out the restart instead of retrying a port nobody listens on
            old_port = settings.get("port")
            if not (isinstance(old_port, int) and can_bind(old_port)):
                settings["port"] = free_port()
            self._retire_legacy_database()
        self._private_database()
        path = self._service_settings_path()
        write_private(path, json.dumps(settings, indent=2))  # the secret key
        url = f"http://127.0.0.1:{settings['port']}"

        from volley.service.auth import issue_token, token_valid

        cfg = ClientConfig()
        cfg_path = self.home / "config.json"
        if cfg_path.exists():
            cfg = ClientConfig(**json.loads(cfg_path.read_text()))
        ttl_s = self._token_ttl_s(path)
        if not cfg.token or not token_valid(settings["database_url"], cfg.token, max_age_s=ttl_s):
            cfg.token = issue_token(settings["database_url"], os.environ.get("USER") or "local", ttl_s=ttl_s)
        cfg.service_url, cfg.ca_file = url, info.ca_file
        cfg.save(cfg_path)

        if running:
            self.progress(f"service: already running at {url}")
            return cfg
        self.progress(f"service: starting at {url} ...")
        try:
            self.service.start(
                [sys.executable, "-m", "volley.service", "--config", str(path)], env=self._child_env(),
                umask=DAEMON_UMASK, timeout=timeout, ready=lambda _pid: _answers(f"{url}/v2/version"),
                waiting_for=f"answer at {url}",
            )
        except SupervisorError as exc:
            raise StackError(str(exc)) from None
        self.progress("service: ready")
        return cfg

    @staticmethod
    def _token_ttl_s(settings_path: Path) -> float:
        from volley.service.settings import ServiceSettings, SettingsError

        try:
            return ServiceSettings.load(settings_path).token_ttl_s
        except SettingsError as exc:
            raise StackError(f"{settings_path}: {exc}") from None

    def _private_database(self) -> None:
        """The SQLite database holds function code, arguments, results and token hashes.
        SQLite creates it with mode 0644 (less the umask) on first use, here or in the
        service: create it empty and 0600 first (an empty file is an empty database).  SQLite
        gives its -wal and -shm files the mode of the database file; any left by an older
        Volley are narrowed too."""
        db = self.service_dir / "service.db"
        private_file(db)
        for suffix in ("-wal", "-shm", "-journal"):
            side = Path(str(db) + suffix)
            if side.exists():
                private_file(side)

    def _retire_legacy_database(self) -> None:
        """Move aside a database made by the pre-migration skeleton; a new one is created."""
        from volley.service.db import is_legacy_database, make_engine

        db = self.service_dir / "service.db"
        if not db.exists():
            return
        engine = make_engine(f"sqlite:///{db}")
        try:
            legacy = is_legacy_database(engine)
        finally:
            engine.dispose()
        if legacy:
            aside = db.with_name(f"service.db.pre-migrations-{int(time.time())}")
            for suffix in ("", "-wal", "-shm"):
                src = Path(str(db) + suffix)
                if src.exists():
                    src.replace(Path(str(aside) + suffix))
            self.progress(f"service: moved a database from an older Volley aside to {aside.name}")

    def _up_endpoint(self, cfg: ClientConfig, timeout: float) -> None:
        private_dir(self.endpoint_dir.parent)
        private_dir(self.endpoint_dir)
        config = self.endpoint_dir / "config.yaml"
        if not config.exists():
            write_private(config, DEFAULT_ENDPOINT_CONFIG.format(workers=max(2, os.cpu_count() or 2)))
        if endpoints.is_running(self.endpoint_dir):
            self.progress("endpoint: already running")
        else:
            self.progress("endpoint: starting 'default' (process-pool engine) ...")
            try:
                endpoints.start_detached(DEFAULT_ENDPOINT, self.endpoint_dir, env=self._child_env(),
                                         umask=DAEMON_UMASK, timeout=timeout,
                                         also_ready=lambda: self._endpoint_online(cfg))
            except SupervisorError as exc:
                raise StackError(str(exc)) from None
            self.progress(f"endpoint: online ({endpoints.endpoint_id(self.endpoint_dir)})")
        cfg.endpoint_id = endpoints.endpoint_id(self.endpoint_dir)
        cfg.save(self.home / "config.json")

    def _endpoint_online(self, cfg: ClientConfig) -> bool:
        """The service has its first heartbeat: clients see it online at once."""
        ep_id = endpoints.endpoint_id(self.endpoint_dir)
        try:
            r = requests.get(f"{cfg.service_url}/v2/endpoints/{ep_id}/status",
                             headers={"Authorization": f"Bearer {cfg.token}"}, timeout=1)
        except requests.RequestException:
            return False
        return r.ok and r.json().get("status") == "online"

    # --- down ---------------------------------------------------------------------------------
    def down(self) -> None:
        self._stop_other_endpoints()
        if endpoints.is_running(self.endpoint_dir):
            self.progress(f"endpoint: stopping (pid {endpoints.pid_of(self.endpoint_dir)})")
            endpoints.stop(self.endpoint_dir, timeout=20.0)
        if self.service.running():
            self.progress(f"service: stopping (pid {self.service.pid()})")
        self.service.stop(grace=20.0)
        if self.broker.info_file.exists():
            info = BrokerInfo(**json.loads(self.broker.info_file.read_text()))
            if self.broker.running():
                self.progress(f"broker: stopping {info.node}")
            self.broker.stop(info)

    def _stop_other_endpoints(self) -> None:
        """Endpoints configured beside the default one (e.g. the demo's MPI endpoint) run on
        this stack's broker and service, so they stop with it."""
        root = self.home / "endpoints"
        if not root.is_dir():
            return
        for d in sorted(root.iterdir()):
            if d.name != DEFAULT_ENDPOINT and d.is_dir() and endpoints.is_running(d):
                self.progress(f"endpoint {d.name}: stopping")
                endpoints.stop(d)

    # --- status -------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        info = None
        if self.broker.info_file.exists():
            info = json.loads(self.broker.info_file.read_text())
        settings = self._service_settings() or {}
        cfg_path = self.home / "config.json"
        cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
        parts = {
            "broker": self.broker.running(),
            "service": self.service.running(),
            "endpoint": endpoints.is_running(self.endpoint_dir),
        }
        return {
            "running": all(parts.values()),
            "processes": parts,
            "service_url": f"http://127.0.0.1:{settings['port']}" if "port" in settings else None,
            "endpoint_id": cfg.get("endpoint_id"),
            "amqps_port": info["amqps_port"] if info else None,
            "broker_node": info["node"] if info else None,
            "ca_file": info["ca_file"] if info else None,
            "state_dir": str(self.home),
        }


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).ok
    except requests.RequestException:
        return False
