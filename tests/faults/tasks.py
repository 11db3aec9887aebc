"""The function the fault suite runs on the endpoint.

It lives in an importable module so that it travels by reference (module and name), as the
functions of an installed user package do; the harness puts this package's parent directory on
the ``PYTHONPATH`` of the stack's processes.
"""

from __future__ import annotations

import os
import time


def expected(i: int) -> tuple[int, int]:
    """What ``record(path, i)`` returns: derived from the input, so a mixed-up result shows."""
    return (i, i * i + 7)


def record(path: str, i: int, delay: float = 0.0) -> tuple[int, int]:
    """Append one line ``"<i> <pid>"`` to ``path`` (a durable record of this execution; a small
    ``O_APPEND`` write is atomic, so lines of concurrent workers never mix), then work for
    ``delay`` seconds, then return ``expected(i)``."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{i} {os.getpid()}\n".encode())
    finally:
        os.close(fd)
    if delay > 0:
        time.sleep(delay)
    return (i, i * i + 7)
