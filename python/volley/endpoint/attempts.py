"""``<endpoint dir>/attempts.log``: which tasks were running when the endpoint agent died.

A task whose worker dies is retried by the engine (``max_retries_on_system_failure``); a task
running when the *agent itself* dies (SIGKILL, out of memory, a task that takes the whole
endpoint down) comes back from the broker to the next run of the agent, which would run it
again without limit: a task that kills its endpoint would crash it forever.  This log lets the
next run count such a death as a failed attempt, against the same limit.

The log is a text file of one record per line, appended with one ``write(2)`` each (no fsync:
the records must survive the agent's death, not the machine's):

``R <pid> <time>``     a run of the agent began
``S <task id> <time>`` a task started running (a worker took it)
``E <task id>``        the task finished (its result is stored or sent) or was answered
``X``                  the run stopped cleanly: its unfinished tasks were stopped on purpose
``D <task id> <text>`` a death of an earlier run, carried over (the cause, as a JSON string)

On opening, every task started and not finished in a run that did not end cleanly counts one
death, whose cause names that run's pid; the file is then rewritten with only the ``D`` lines
still open (and again when it grows past :data:`ROTATE_BYTES`).  A torn last line is ignored.
Engines that cannot tell when a task starts (Parsl's) never write ``S``; their tasks are not
counted (Parsl handles the loss of its own workers).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import OrderedDict
from pathlib import Path

from volley.private_files import PRIVATE_FILE_MODE, write_private

log = logging.getLogger(__name__)

ROTATE_BYTES = 8 << 20
# tasks whose deaths are remembered at most; the oldest are forgotten past this
MAX_TRACKED = 100_000


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def _task_id(text: str) -> str | None:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None


def read_deaths(lines: list[str], host: str) -> OrderedDict[str, list[str]]:
    """Every task's deaths recorded in ``lines`` (the log's content), oldest task first."""
    deaths: OrderedDict[str, list[str]] = OrderedDict()
    run: tuple[str, float] | None = None
    running: dict[str, float] = {}

    def close_run() -> None:
        for task_id, started in running.items():
            pid, began = run if run is not None else ("?", started)
            deaths.setdefault(task_id, []).append(
                f"the endpoint agent (pid {pid} on {host}, running since {_stamp(began)}) stopped "
                f"while this task ran (started {_stamp(started)}): it was killed, ran out of memory "
                "or crashed")
        running.clear()

    for line in lines:
        parts = line.rstrip("\n").split("\t", 2)
        kind = parts[0]
        try:
            if kind == "R":
                close_run()
                run = (parts[1], float(parts[2]))
            elif kind == "X":
                running.clear()
            elif kind in ("S", "E", "D") and (task_id := _task_id(parts[1])) is not None:
                if kind == "S":
                    running[task_id] = float(parts[2])
                elif kind == "E":
                    running.pop(task_id, None)
                    deaths.pop(task_id, None)
                else:
                    cause = json.loads(parts[2])
                    if isinstance(cause, str):
                        deaths.setdefault(task_id, []).append(cause)
        except (IndexError, ValueError):
            continue  # a torn or foreign line
    close_run()
    return deaths


class AttemptLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.pid, self.began = os.getpid(), time.time()
        self._lock = threading.Lock()
        self._running: dict[str, float] = {}
        try:
            lines = path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            lines = []
        self._deaths = read_deaths(lines, socket.gethostname())
        while len(self._deaths) > MAX_TRACKED:
            self._deaths.popitem(last=False)
        if self._deaths:
            log.warning("%d task(s) were running when an earlier run of this endpoint stopped; "
                        "each counts as a failed attempt when it comes back", len(self._deaths))
        self._fd = -1
        self._written = 0
        self._rewrite()

    def _rewrite(self) -> None:
        """Replace the file with what is still open; call with the lock held (or from __init__)."""
        lines = [f"D\t{t}\t{json.dumps(c)}\n" for t, causes in self._deaths.items() for c in causes]
        lines.append(f"R\t{self.pid}\t{self.began}\n")
        lines += [f"S\t{t}\t{s}\n" for t, s in self._running.items()]
        write_private(self.path, "".join(lines), fsync=False)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC, PRIVATE_FILE_MODE)
        self._written = 0

    def _append(self, line: str) -> None:
        if self._fd < 0:
            return  # closed
        raw = line.encode()
        os.write(self._fd, raw)
        self._written += len(raw)
        if self._written > ROTATE_BYTES:
            self._rewrite()

    def causes(self, task_id: str) -> list[str]:
        """The deaths of earlier runs while ``task_id`` ran, oldest first."""
        with self._lock:
            return list(self._deaths.get(task_id, ()))

    def started(self, task_id: str) -> None:
        now = time.time()
        with self._lock:
            self._running[task_id] = now
            self._append(f"S\t{task_id}\t{now}\n")

    def ended(self, task_id: str) -> None:
        """``task_id`` has its result (or answer): its earlier deaths are settled."""
        with self._lock:
            ran = self._running.pop(task_id, None) is not None
            died = self._deaths.pop(task_id, None) is not None
            if ran or died:  # else never started here and no deaths: nothing to write
                self._append(f"E\t{task_id}\n")

    def close(self) -> None:
        """A clean stop: the tasks still running were stopped on purpose and do not count."""
        with self._lock:
            if self._fd < 0:
                return
            self._append("X\n")
            os.close(self._fd)
            self._fd = -1
