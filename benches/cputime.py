"""CPU time (user + system, psutil) of the processes a benchmark drives, by role.

A role is a set of processes found anew at each reading (a process pool may start its workers
during the measured window), so a ``CpuWindow`` reads every role's processes when it starts and
when it stops: a process seen only at the stop was born in the window and counts from zero (its
start-up is part of what the window cost); a process gone by the stop is not counted (its time
is lost with it; the benchmarks' processes live through their windows).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import psutil

# role -> the pids it holds right now
Roles = Callable[[], dict[str, list[int]]]
_Key = tuple[int, float]  # (pid, create time): a pid reused by a new process is another process


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU of one process so far (0 when it is gone or unreadable)."""
    if pid is None:
        return 0.0
    try:
        t = psutil.Process(pid).cpu_times()
    except (psutil.Error, OSError):
        return 0.0
    return float(t.user + t.system)


def descendants(pid: int | None) -> list[int]:
    """Every process below ``pid`` (children, their children, ...); [] when it is gone."""
    if pid is None:
        return []
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except (psutil.Error, OSError):
        return []


def tree(pid: int | None) -> list[int]:
    """``pid`` and its descendants."""
    return [] if pid is None else [pid, *descendants(pid)]


def cmdline(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except (psutil.Error, OSError):
        return ""


def parent(pid: int) -> int | None:
    try:
        return psutil.Process(pid).ppid()
    except (psutil.Error, OSError):
        return None


def this_process() -> list[int]:
    return [os.getpid()]


def _read(pids: Iterable[int]) -> dict[_Key, float]:
    out = {}
    for pid in pids:
        try:
            p = psutil.Process(pid)
            with p.oneshot():
                t = p.cpu_times()
                out[(pid, p.create_time())] = float(t.user + t.system)
        except (psutil.Error, OSError):
            continue
    return out


class CpuWindow:
    """CPU seconds each role spent between ``start()`` and ``stop()``."""

    def __init__(self, roles: Roles) -> None:
        self.roles = roles
        self._start: dict[str, dict[_Key, float]] = {}

    def _snapshot(self) -> dict[str, dict[_Key, float]]:
        return {role: _read(pids) for role, pids in self.roles().items()}

    def start(self) -> None:
        self._start = self._snapshot()

    def stop(self) -> dict[str, float]:
        end = self._snapshot()
        out = {}
        for role in self._start.keys() | end.keys():
            before = self._start.get(role, {})
            out[role] = sum(cpu - before.get(key, 0.0) for key, cpu in end.get(role, {}).items())
        return out


def per_task_us(seconds: dict[str, float], n: int) -> dict[str, float]:
    """CPU seconds by role -> µs per task."""
    return {role: s / n * 1e6 for role, s in seconds.items()}
