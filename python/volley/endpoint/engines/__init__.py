"""Engines run tasks: thread pool, process pool, Parsl HighThroughputExecutor, Parsl MPI mode.

Every engine takes the packed task as it came off the queue and returns a future of the packed
``Result`` bytes (see :mod:`volley.endpoint.engines.base`).  Parsl is imported only by the
Parsl engines, so thread and process endpoints start fast.
"""

from __future__ import annotations

from typing import Any

from volley.endpoint.engines.base import (
    Engine,
    EngineConfigError,
    EngineStopped,
    ResourceSpecError,
)

__all__ = [
    "Engine",
    "EngineConfigError",
    "EngineStopped",
    "ResourceSpecError",
    "build_engine",
    "check_engine_config",
    "engine_class",
]


def engine_class(engine_type: str) -> type[Engine]:
    if engine_type in ("ThreadPoolEngine", "ProcessPoolEngine"):
        from volley.endpoint.engines import pools

        return getattr(pools, engine_type)  # type: ignore[no-any-return]
    if engine_type in ("HighThroughputEngine", "MPIEngine"):
        from volley.endpoint.engines import htex

        return getattr(htex, engine_type)  # type: ignore[no-any-return]
    raise EngineConfigError(f"engine.type: {engine_type!r} is not a Volley engine")


def _check_pool_options(cls: type[Engine], options: dict[str, Any]) -> None:
    from volley.endpoint.engines.base import COMMON_OPTIONS

    accepted = (*COMMON_OPTIONS, *cls.options)
    for key in options:
        if key not in accepted:
            raise EngineConfigError(f"engine.{key}: unknown key for {cls.type_name}; accepted: {', '.join(accepted)}")


def build_engine(engine_type: str, options: dict[str, Any], *, endpoint_id: str | None = None,
                 endpoint_dir: str = ".", run_in_sandbox: bool = False) -> Engine:
    """Build (not start) an engine; a bad option raises EngineConfigError naming its key."""
    cls = engine_class(engine_type)
    opts = dict(options)
    opts["run_in_sandbox"] = bool(run_in_sandbox or opts.get("run_in_sandbox", False))
    if cls.type_name in ("ThreadPoolEngine", "ProcessPoolEngine"):
        _check_pool_options(cls, opts)
    return cls(endpoint_id=endpoint_id, endpoint_dir=endpoint_dir, **opts)


def check_engine_config(engine_type: str, options: dict[str, Any]) -> None:
    build_engine(engine_type, options)
