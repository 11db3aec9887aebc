"""Volley: a self-hostable, Rust-accelerated function-as-a-service system.

The public names match the Globus Compute SDK, so a script written for its Executor guide runs
after changing only its import line.  Imports are lazy: an endpoint worker that only needs
``volley.serialize`` does not pay for the HTTP client or the service.
"""

from __future__ import annotations

import importlib
import typing as t

from volley.version import __version__

__author__ = "The Volley Team"
__all__ = ("Client", "Executor", "MPIFunction", "ShellFunction", "ShellResult", "__version__", "progress")

_LAZY = {
    "Client": "volley.sdk.client",
    "Executor": "volley.sdk.executor",
    "ShellFunction": "volley.sdk.shell_function",
    "ShellResult": "volley.sdk.shell_function",
    "MPIFunction": "volley.sdk.mpi_function",
    "progress": "volley.sdk.progress",
}

if t.TYPE_CHECKING:
    from volley.sdk.client import Client
    from volley.sdk.executor import Executor
    from volley.sdk.mpi_function import MPIFunction
    from volley.sdk.progress import progress
    from volley.sdk.shell_function import ShellFunction, ShellResult


def __getattr__(name: str) -> t.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'volley' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
