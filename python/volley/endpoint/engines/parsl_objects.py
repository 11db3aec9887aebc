"""Turn YAML blocks into Parsl objects: ``provider:``, ``launcher:`` and ``address:``.

``type`` names a class in ``parsl.providers`` / ``parsl.launchers`` (or a function in
``parsl.addresses``); every other key is a constructor keyword.  Unknown keywords and wrong
types are reported with their full key path, so a typo fails at start, not at the first task.
"""

from __future__ import annotations

import inspect
from typing import Any

from volley.endpoint.engines.base import EngineConfigError


def check_kwargs(target: Any, kwargs: dict[str, Any], key: str, *, exclude: tuple[str, ...] = ()) -> None:
    params = inspect.signature(target).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if n not in ("self", *exclude)
                and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    for name, value in kwargs.items():
        if name not in accepted:
            raise EngineConfigError(f"{key}.{name}: unknown key; accepted: {', '.join(accepted)}")
        _check_type(f"{key}.{name}", value, params[name].default)


def _check_type(key: str, value: Any, default: Any) -> None:
    """Parsl checks some constructors' types (typeguard) and not others; the default's type
    tells what an untyped keyword expects, so "max_blocks: many" fails here, not mid-run."""
    if default is inspect.Parameter.empty or default is None or value is None:
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    else:
        return
    if not ok:
        raise EngineConfigError(f"{key}: expected {type(default).__name__} (like {default!r}), got {value!r}")


def _construct(target: Any, kwargs: dict[str, Any], key: str) -> Any:
    check_kwargs(target, kwargs, key)
    try:
        return target(**kwargs)
    except Exception as exc:  # Parsl checks types with typeguard, values with asserts/ValueError
        raise EngineConfigError(f"{key}: {type(exc).__name__}: {exc}") from None


def _lookup(module: Any, block: Any, key: str, what: str) -> tuple[Any, dict[str, Any]]:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise EngineConfigError(f"{key}: must be a mapping with a 'type' naming a Parsl {what}")
    name = block["type"]
    names = [n for n in getattr(module, "__all__", dir(module)) if not n.startswith("_")]
    if name not in names:
        raise EngineConfigError(f"{key}.type: {name!r} is not a Parsl {what}; one of {', '.join(sorted(set(names)))}")
    try:
        target = getattr(module, name)
    except Exception as exc:  # e.g. a cloud provider whose optional package is missing
        raise EngineConfigError(f"{key}.type: {name} cannot be loaded: {exc}") from None
    return target, {k: v for k, v in block.items() if k != "type" and v is not None}


def build_launcher(block: Any, key: str) -> Any:
    import parsl.launchers

    target, kwargs = _lookup(parsl.launchers, block, key, "launcher")
    return _construct(target, kwargs, key)


def build_provider(block: Any, key: str, *, default_launcher: str | None = None) -> Any:
    import parsl.providers

    target, kwargs = _lookup(parsl.providers, block, key, "provider")
    if "launcher" in kwargs:
        kwargs["launcher"] = build_launcher(kwargs["launcher"], f"{key}.launcher")
    elif default_launcher is not None:
        kwargs["launcher"] = build_launcher({"type": default_launcher}, f"{key}.launcher")
    if "container_uri" in kwargs:
        raise EngineConfigError(f"{key}.container_uri: containers are not supported by Volley's engines")
    return _construct(target, kwargs, key)


def build_address(value: Any, key: str) -> str:
    if isinstance(value, str):
        return value
    import parsl.addresses

    if not isinstance(value, dict) or not str(value.get("type", "")).startswith("address_by_"):
        raise EngineConfigError(
            f"{key}: must be an address string or {{type: address_by_interface|address_by_hostname|"
            "address_by_route|address_by_query, ...}}"
        )
    fn = getattr(parsl.addresses, value["type"], None)
    if fn is None:
        raise EngineConfigError(f"{key}.type: {value['type']!r} is not in parsl.addresses")
    result = _construct(fn, {k: v for k, v in value.items() if k != "type"}, key)
    if not isinstance(result, str) or not result:
        raise EngineConfigError(f"{key}: {value['type']} found no address")
    return result
