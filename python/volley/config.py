"""Where programs find the service: ``VOLLEY_*`` environment variables, else the client
configuration that ``volley local up`` writes to ``$VOLLEY_HOME/config.json``."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path


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
        path = path or config_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.chmod(tmp, 0o600)
        tmp.replace(path)
        return path


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
