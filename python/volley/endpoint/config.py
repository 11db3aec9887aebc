"""Endpoint configuration: ``$VOLLEY_HOME/endpoints/NAME/config.yaml``.

A bad file fails at start with the key and the reason, never halfway through running: every
top-level key is checked here, and the ``engine:`` block is checked by building (not starting)
the engine, so Parsl rejects a wrong provider keyword before anything registers or consumes.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

# Upstream's names for the same engines, so configs written for the guide load unchanged.
ENGINE_ALIASES = {"GlobusComputeEngine": "HighThroughputEngine", "GlobusMPIEngine": "MPIEngine"}
ENGINE_TYPES = ("ThreadPoolEngine", "ProcessPoolEngine", "HighThroughputEngine", "MPIEngine")


class ConfigError(ValueError):
    """A configuration problem; the text names the file, the key and the reason."""


@dataclass
class EndpointConfig:
    display_name: str | None = None
    engine: dict[str, Any] = field(default_factory=lambda: {"type": "ProcessPoolEngine"})
    # seconds between status reports; the service calls an endpoint offline after 3 missed ones
    heartbeat_period: float = 30.0
    run_in_sandbox: bool = False
    allowed_functions: list[str] | None = None
    amqp_port: int | None = None
    # deliveries held unacked at once (running + waiting); default: 2 x engine capacity + 8
    prefetch: int | None = None
    # upstream's idle shutdown: after work has moved and all is done, stop after this many
    # idle heartbeats (soft); stop after this many heartbeats without any movement (hard).
    # 0 = never.
    idle_heartbeats_soft: int = 0
    idle_heartbeats_hard: int = 0
    # at shutdown, how long running tasks may finish before they are handed back to the queue
    shutdown_grace: float = 10.0
    debug: bool = False

    @property
    def engine_type(self) -> str:
        t = self.engine.get("type", "ProcessPoolEngine")
        return ENGINE_ALIASES.get(t, t)

    def engine_options(self) -> dict[str, Any]:
        """The engine block without ``type``; ``null`` values dropped (they mean "default")."""
        return {k: v for k, v in self.engine.items() if k != "type" and v is not None}

    @property
    def sandbox(self) -> bool:
        # the guide puts run_in_sandbox inside the engine block; accept both places
        return bool(self.run_in_sandbox or self.engine.get("run_in_sandbox", False))


def _number(path: str, key: str, value: Any, *, minimum: float, integer: bool = False) -> Any:
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise ConfigError(f"{path}: {key} must be {kind}, got {value!r}")
    if not math.isfinite(value):  # YAML's .inf and .nan are floats, and nan passes any "<"
        raise ConfigError(f"{path}: {key} must be a finite number, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{path}: {key} must be at least {minimum}, got {value!r}")
    return value


def check_values(cfg: EndpointConfig, path: str) -> None:
    if cfg.display_name is not None and not isinstance(cfg.display_name, str):
        raise ConfigError(f"{path}: display_name must be a string, got {cfg.display_name!r}")
    if not isinstance(cfg.engine, dict):
        raise ConfigError(f"{path}: engine must be a mapping with a 'type' (e.g. type: ProcessPoolEngine)")
    etype = cfg.engine.get("type")
    if etype is None:
        raise ConfigError(f"{path}: engine.type is missing; one of {', '.join(ENGINE_TYPES)}")
    if cfg.engine_type not in ENGINE_TYPES:
        raise ConfigError(
            f"{path}: engine.type {etype!r} is not one of {', '.join(ENGINE_TYPES)} "
            f"(aliases: {', '.join(ENGINE_ALIASES)})"
        )
    cfg.heartbeat_period = float(_number(path, "heartbeat_period", cfg.heartbeat_period, minimum=0.5))
    for key in ("run_in_sandbox", "debug"):
        if not isinstance(getattr(cfg, key), bool):
            raise ConfigError(f"{path}: {key} must be true or false, got {getattr(cfg, key)!r}")
    if "run_in_sandbox" in cfg.engine and not isinstance(cfg.engine["run_in_sandbox"], bool):
        raise ConfigError(f"{path}: engine.run_in_sandbox must be true or false")
    if cfg.allowed_functions is not None:
        if not isinstance(cfg.allowed_functions, list):
            raise ConfigError(f"{path}: allowed_functions must be a list of function ids")
        normal = []
        for i, fid in enumerate(cfg.allowed_functions):
            try:
                normal.append(str(uuid.UUID(str(fid))))
            except ValueError:
                raise ConfigError(f"{path}: allowed_functions[{i}]: {fid!r} is not a function id (UUID)") from None
        cfg.allowed_functions = normal
    if cfg.amqp_port is not None:
        _number(path, "amqp_port", cfg.amqp_port, minimum=1, integer=True)
        if cfg.amqp_port > 65535:
            raise ConfigError(f"{path}: amqp_port must be at most 65535, got {cfg.amqp_port}")
    if cfg.prefetch is not None:
        _number(path, "prefetch", cfg.prefetch, minimum=1, integer=True)
    for key in ("idle_heartbeats_soft", "idle_heartbeats_hard"):
        _number(path, key, getattr(cfg, key), minimum=0, integer=True)
    cfg.shutdown_grace = float(_number(path, "shutdown_grace", cfg.shutdown_grace, minimum=0))


def parse_config(text: str, path: str = "config.yaml", *, check_engine: bool = True) -> EndpointConfig:
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except RecursionError:  # PyYAML's composer recurses once per level of nesting
        raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    known = {f.name for f in fields(EndpointConfig)}
    for key in raw:
        if key not in known:
            raise ConfigError(f"{path}: unknown key {key!r}; known keys: {', '.join(sorted(known))}")
    raw = {k: v for k, v in raw.items() if v is not None or k in ("display_name", "allowed_functions", "amqp_port", "prefetch")}
    cfg = EndpointConfig(**raw)
    check_values(cfg, path)
    if check_engine:
        from volley.endpoint.engines import EngineConfigError, check_engine_config

        try:
            check_engine_config(cfg.engine_type, cfg.engine_options())
        except EngineConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    return cfg


def load_config(path: Path, *, check_engine: bool = True) -> EndpointConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file; create it with `volley endpoint configure`") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return parse_config(text, str(path), check_engine=check_engine)
