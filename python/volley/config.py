"""Where programs find the service: ``VOLLEY_*`` environment variables, else the client
configuration that ``volley local up`` writes to ``$VOLLEY_HOME/config.json``."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from volley.private_files import private_dir, write_private


def volley_home() -> Path:
    return Path(os.environ.get("VOLLEY_HOME") or Path.home() / ".volley").expanduser()


def config_path() -> Path:
    return volley_home() / "config.json"


@dataclass
class ClientConfig:
    service_url: str | None = None
    token: str | None = None
    ca_file: str | None = None
    endpoint_id: str | None = None  # the default endpoint of the local stack

    def save(self, path: Path | None = None) -> Path:
        """Write the configuration (it holds the token) as a 0600 file in a 0700 directory,
        atomically, created with that mode (see volley.private_files)."""
        path = path or config_path()
        private_dir(path.parent)
        return write_private(path, json.dumps(asdict(self), indent=2))


def load_client_config() -> ClientConfig:
    cfg = ClientConfig()
    path = config_path()
    if path.exists():
        data = json.loads(path.read_text())
        cfg = ClientConfig(**{k: data.get(k) for k in ClientConfig.__dataclass_fields__})
    env = {
        "service_url": "VOLLEY_SERVICE_URL",
        "token": "VOLLEY_TOKEN",
        "ca_file": "VOLLEY_CA_FILE",
        "endpoint_id": "VOLLEY_ENDPOINT_ID",
    }
    for field, var in env.items():
        if os.environ.get(var):
            setattr(cfg, field, os.environ[var])
    return cfg
