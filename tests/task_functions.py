"""Task functions shared by the tests that watch a task start, wait and finish on an endpoint
or in a worker pool (they travel like any user function: by reference to this module)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def touch_then_wait(started: str, release: str) -> str:
    """Say it started, then run until told to finish (or, if never told, for ten minutes)."""
    Path(started).touch()
    deadline = time.monotonic() + 600
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.01)
    return "released"


def touch(marker: str) -> str:
    Path(marker).touch()
    return "ran"


def die_once(marker: str, x: int) -> int:
    """Kill the worker process running it the first time (``marker`` says it did); then x + 1."""
    if not os.path.exists(marker):
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return x + 1


def when_released(release: str, x: int) -> int:
    """Wait until ``release`` exists (or ten minutes pass), then return x."""
    deadline = time.monotonic() + 600
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.01)
    return x


def staggered(x: int) -> int:
    """Return x after x / 20 seconds: a burst of these finishes one by one, a result each."""
    time.sleep(x / 20)
    return x
