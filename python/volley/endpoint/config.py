"""Endpoint configuration: ``$VOLLEY_HOME/endpoints/NAME/config.yaml``.

A bad file fails at start with the key and the reason, never halfway through running.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ENGINE_ALIASES = {"GlobusComputeEngine": "HighThroughputEngine", "GlobusMPIEngine": "MPIEngine"}
ENGINE_TYPES = ("ThreadPoolEngine", "ProcessPoolEngine", "HighThroughputEngine", "MPIEngine")


class ConfigError(ValueError):
    pass


@dataclass
class EndpointConfig:
    display_name: str | None = None
    engine: dict[str, Any] = field(default_factory=lambda: {"type": "ProcessPoolEngine"})
    heartbeat_period: float = 30.0
    run_in_sandbox: bool = False
    allowed_functions: list[str] | None = None
    amqp_port: int | None = None
    prefetch: int | None = None

    @property
    def engine_type(self) -> str:
        t = self.engine.get("type", "ProcessPoolEngine")
        return ENGINE_ALIASES.get(t, t)

    def engine_kwargs(self) -> dict[str, Any]:
        return {k: v for k, v in self.engine.items() if k not in ("type", "run_in_sandbox") and v is not None}

    @property
    def sandbox(self) -> bool:
        # the guide puts run_in_sandbox inside the engine block; accept both places
        return bool(self.run_in_sandbox or self.engine.get("run_in_sandbox", False))


def load_config(path: Path) -> EndpointConfig:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file; create it with `volley endpoint configure`") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    known = set(EndpointConfig.__dataclass_fields__)
    for key in raw:
        if key not in known:
            raise ConfigError(f"{path}: unknown key {key!r}; known keys: {', '.join(sorted(known))}")
    cfg = EndpointConfig(**raw)
    if not isinstance(cfg.engine, dict):
        raise ConfigError(f"{path}: key 'engine' must be a mapping with a 'type'")
    if cfg.engine_type not in ENGINE_TYPES:
        raise ConfigError(
            f"{path}: engine.type {cfg.engine.get('type')!r} is not one of {', '.join(ENGINE_TYPES)}"
        )
    try:
        cfg.heartbeat_period = float(cfg.heartbeat_period)
    except (TypeError, ValueError):
        raise ConfigError(f"{path}: heartbeat_period must be a number of seconds") from None
    if cfg.heartbeat_period <= 0:
        raise ConfigError(f"{path}: heartbeat_period must be positive")
    return cfg
