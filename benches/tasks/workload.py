"""The functions the benchmarks run remotely.

They live in an importable module so that they travel by reference (module and name), as the
functions of an installed user package do; the stacks' endpoints get this directory on their
``PYTHONPATH``.
"""

from __future__ import annotations


def noop() -> None:
    return None


def echo(x: int, label: str = "") -> int:
    """The submission bench's function: small positional and keyword arguments."""
    return x
