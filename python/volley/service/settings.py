"""Service settings, read from a JSON file (``--config``) with ``VOLLEY_SERVICE_*`` overrides."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path


@dataclass
class ServiceSettings:
    database_url: str = "sqlite:///volley-service.db"
    # how the service itself reaches the broker (administrative credentials)
    broker_url: str = "amqps://localhost:5671/%2F"
    # the URL handed to SDKs and endpoints (credentials included); defaults to broker_url
    public_broker_url: str | None = None
    ca_file: str | None = None
    host: str = "127.0.0.1"
    port: int = 5000
    transport: str | None = None
    task_ttl_s: float = 14 * 24 * 3600.0

    @classmethod
    def load(cls, path: str | Path | None = None) -> ServiceSettings:
        values: dict = {}
        if path:
            values.update(json.loads(Path(path).read_text()))
        for f in fields(cls):
            env = os.environ.get(f"VOLLEY_SERVICE_{f.name.upper()}")
            if env is not None:
                values[f.name] = env
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown service setting(s) {unknown}; known: {sorted(known)}")
        settings = cls(**values)
        settings.port = int(settings.port)
        settings.task_ttl_s = float(settings.task_ttl_s)
        return settings

    @property
    def handed_out_url(self) -> str:
        return self.public_broker_url or self.broker_url
