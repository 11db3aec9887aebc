"""A pool of spawned worker processes, each fed batches of tasks over its own pipe.

The standard library's ProcessPoolExecutor hands tasks over one at a time through shared
queues and a management thread; for short tasks that hand-off costs more than the task.  Here
each worker has a duplex pipe: the agent sends it a *batch* of tasks, the worker runs them in
order and sends their results back, together when they are quick, one by one when they are not
(a result waits at most :data:`FLUSH_S` for company).  How many tasks a worker holds at once
adapts to how long they take: about :data:`BATCH_S` of work, one task at a time for long ones,
so a long task never keeps a queue of short ones from an idle worker.

Threads on the agent's side: one *reader* waits on every pipe and every worker's sentinel; one
*feeder* per worker sends its batches (so a full pipe blocks only that feeder, never the reader:
a worker blocked sending results is always drained).

When a worker dies, the task it was running fails with :class:`WorkerLost` (the engine retries
it per ``max_retries_on_system_failure``); the tasks queued behind it never started and go back
to the front of the line; a new worker takes its place.

Cancelling (:meth:`WorkerPool.cancel`): a task still waiting here is dropped; one a worker holds
behind the task it runs is named in a ``("skip", task_id)`` message, which the worker reads
before it starts its next task (one ``poll`` of its pipe per task) and answers with no result;
the task a worker runs is stopped only by force, by killing that worker.  Each resolves with
:class:`TaskCancelled`; the tasks behind a killed worker run on.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import queue
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from multiprocessing.connection import Connection, wait
from typing import Any

from volley.endpoint.engines.base import CancelOutcome
from volley.endpoint.execute import execute_task

log = logging.getLogger(__name__)

FLUSH_S = 0.002  # a finished result waits at most this long for the next one
BATCH_S = 0.01  # hand each worker about this much work at once
MAX_DEPTH = 64  # tasks a worker holds at most
# a worker that dies this many times in a row without finishing anything means the workers
# cannot start (a broken environment): the engine reports it instead of respawning forever
MAX_BARREN_DEATHS = 5

Task = tuple[str, bytes, "list[str] | None"]
SKIP = "skip"


class WorkerLost(RuntimeError):
    """The worker process running a task died (killed, out of memory, ``os._exit``, crash)."""


def worker_main(conn: Connection, common: dict[str, Any]) -> None:
    """A worker's loop: run the tasks it is sent, in order, skipping those it is told to skip;
    ``None`` or a closed pipe ends it."""
    # Ctrl-C at a terminal reaches the whole foreground process group: the agent handles it and
    # stops the workers itself; a worker dying of KeyboardInterrupt would look like a lost worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pending: deque[Task] = deque()
    skip: set[str] = set()

    def take(msg: Any) -> bool:
        if msg is None:
            return False
        if isinstance(msg, list):
            pending.extend(msg)
        else:  # (SKIP, task_id): sent after the batch that holds the task
            skip.add(msg[1])
        return True

    while True:
        try:
            if not take(conn.recv()):
                return
            done: list[tuple[str, bytes | None, float]] = []
            flushed = time.monotonic()
            while pending:
                while conn.poll():  # a skip (or the next batch) sent while the last task ran
                    if not take(conn.recv()):
                        return
                task_id, body, serializers = pending.popleft()
                if skip and task_id in skip:
                    skip.discard(task_id)
                    done.append((task_id, None, 0.0))  # no result: the agent resolves it as cancelled
                else:
                    t0 = time.monotonic()
                    result = execute_task(task_id, body, result_serializers=serializers, **common)
                    done.append((task_id, result, time.monotonic() - t0))
                now = time.monotonic()
                if now - flushed >= FLUSH_S or not pending:
                    conn.send(done)
                    done, flushed = [], now
            skip.clear()  # names of tasks that finished before their skip arrived
        except (EOFError, OSError):
            return


class _Worker:
    def __init__(self, ctx: Any, common: dict[str, Any], index: int) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=worker_main, args=(child, common), name=f"volley-worker-{index}",
                                daemon=True)
        self.proc.start()
        child.close()
        # tasks sent and not answered, in the order the worker runs them
        self.held: deque[tuple[str, Future, Task]] = deque()
        self.outbox: queue.SimpleQueue[list[Task] | tuple[str, str] | None] = queue.SimpleQueue()
        self.finished_any = False
        self.started: str | None = None  # the task last reported to on_start
        self.cancelled: str | None = None  # the running task it was killed to stop
        self.feeder = threading.Thread(target=self._feed, name=f"volley-feed-{index}", daemon=True)
        self.feeder.start()

    def _feed(self) -> None:
        while (batch := self.outbox.get()) is not None:
            try:
                self.conn.send(batch)
            except (OSError, ValueError):
                return  # the worker is gone: the reader sees its sentinel


class WorkerPool:
    def __init__(self, size: int, common: dict[str, Any],
                 cancelled_error: Callable[[str], BaseException] = RuntimeError,
                 on_start: Callable[[str], None] = lambda _task_id: None) -> None:
        self.size = size
        # told (with the lock held) when a task becomes the first a worker holds: the one it
        # runs, or will run next once the results before it are sent
        self.on_start = on_start
        # what a cancelled task's future fails with, given the reason
        self.cancelled_error = cancelled_error
        self.common = common  # execute_task's keyword arguments besides result_serializers
        self._ctx = multiprocessing.get_context("spawn")  # never fork: the agent has broker threads
        self._lock = threading.Lock()
        self._waiting: deque[tuple[str, Future, Task]] = deque()
        self._workers: list[_Worker] = []
        self._spawned = 0
        self._mean_s: float | None = None  # recent time per task, for the batch depth
        self._barren = 0
        self._stopping = False
        self._reader: threading.Thread | None = None
        self.problem: str | None = None

    # --- the agent's side -----------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            self._workers = [self._spawn() for _ in range(self.size)]
        self._reader = threading.Thread(target=self._read, name="volley-pool-reader", daemon=True)
        self._reader.start()

    def submit(self, task_id: str, body: bytes, serializers: list[str] | None) -> Future:
        fut: Future = Future()
        with self._lock:
            if self._stopping:
                raise RuntimeError("the pool is shut down")
            self._waiting.append((task_id, fut, (task_id, body, serializers)))
            self._dispatch()
        return fut

    def cancel(self, task_id: str, force: bool) -> str:
        """Cancel ``task_id``; return a :class:`CancelOutcome`.  A cancelled task's future
        fails with ``cancelled_error(reason)``."""
        with self._lock:
            for i, item in enumerate(self._waiting):
                if item[0] == task_id:
                    del self._waiting[i]
                    break
            else:
                item = None
            if item is None:
                for w in self._workers:
                    for i, held in enumerate(w.held):
                        if held[0] != task_id:
                            continue
                        if i > 0:
                            w.outbox.put((SKIP, task_id))
                            return CancelOutcome.SKIPPING
                        if not force:
                            return CancelOutcome.RUNNING
                        w.cancelled = task_id
                        w.proc.kill()  # the reader sees its sentinel: _lost resolves the task
                        return CancelOutcome.KILLED
                return CancelOutcome.UNKNOWN
        if not item[1].done():
            item[1].set_exception(self.cancelled_error("it was cancelled before it started"))
        return CancelOutcome.DROPPED

    def busy(self) -> int:
        with self._lock:
            return sum(1 for w in self._workers if w.held)

    def shutdown(self, exc: Callable[[str], BaseException]) -> None:
        """Stop every worker now; each task waiting or running fails with ``exc(task_id)``."""
        with self._lock:
            self._stopping = True
            left = list(self._waiting)
            self._waiting.clear()
            workers, self._workers = self._workers, []
            for w in workers:
                left.extend(w.held)
                w.held.clear()
        for w in workers:
            w.outbox.put(None)
            w.proc.terminate()
        for w in workers:
            w.proc.join(timeout=5)
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(timeout=5)
            w.conn.close()
        for task_id, fut, _ in left:
            if not fut.done():
                fut.set_exception(exc(task_id))

    # --- internals (call with the lock held) ------------------------------------------------------
    def _spawn(self) -> _Worker:
        self._spawned += 1
        return _Worker(self._ctx, self.common, self._spawned)

    def _depth(self) -> int:
        if self._mean_s is None:
            return 1  # nothing known yet: as if tasks were long
        return max(1, min(MAX_DEPTH, math.floor(BATCH_S / max(self._mean_s, 1e-6))))

    def _dispatch(self) -> None:
        if self._waiting and not self._stopping:
            self._hand_out()
        self._report_starts()

    def _hand_out(self) -> None:
        depth = self._depth()
        for w in sorted(self._workers, key=lambda w: len(w.held)):
            room = depth - len(w.held)
            if room <= 0 or not self._waiting:
                continue
            batch = []
            while room > 0 and self._waiting:
                item = self._waiting.popleft()
                if item[1].done():  # cancelled meanwhile
                    continue
                w.held.append(item)
                batch.append(item[2])
                room -= 1
            if batch:
                self._report_start(w)  # before the worker can run it (and perhaps take the agent down)
                w.outbox.put(batch)

    def _report_starts(self) -> None:
        for w in self._workers:
            self._report_start(w)

    def _report_start(self, w: _Worker) -> None:
        if w.held and w.held[0][0] != w.started:
            w.started = w.held[0][0]
            self.on_start(w.started)

    # --- the reader thread --------------------------------------------------------------------
    def _read(self) -> None:
        while True:
            with self._lock:
                if self._stopping:
                    return
                workers = list(self._workers)
            ready = wait([w.conn for w in workers] + [w.proc.sentinel for w in workers], timeout=0.5)
            for w in workers:
                if w.conn in ready:
                    self._receive(w)
            for w in workers:
                if w.proc.sentinel in ready:
                    self._lost(w)

    def _receive(self, w: _Worker) -> bool:
        """Take one message of results from ``w``; False when its pipe is closed."""
        try:
            results: list[tuple[str, bytes | None, float]] = w.conn.recv()
        except (EOFError, OSError):
            return False  # dying: its sentinel follows
        resolved = []
        with self._lock:
            for task_id, packed, seconds in results:
                while w.held:
                    held_id, fut, _ = w.held.popleft()
                    if held_id == task_id:
                        resolved.append((fut, packed))
                        break
                if packed is None:  # skipped: it took no time
                    continue
                self._mean_s = seconds if self._mean_s is None else 0.8 * self._mean_s + 0.2 * seconds
            w.finished_any = True
            self._barren = 0
            self._dispatch()
        for fut, packed in resolved:
            if fut.done():
                continue
            if packed is None:
                fut.set_exception(self.cancelled_error("it was cancelled before it started"))
            else:
                fut.set_result(packed)
        return True

    def _lost(self, w: _Worker) -> None:
        try:
            while w.conn.poll() and self._receive(w):  # results it sent before it died
                pass
        except OSError:
            pass
        code = w.proc.exitcode
        with self._lock:
            if self._stopping or w not in self._workers:
                return
            running = w.held.popleft() if w.held else None
            # queued behind the lost task, never started: first in line again, in order
            self._waiting.extendleft(reversed(w.held))
            w.held.clear()
            w.outbox.put(None)
            w.conn.close()
            self._barren = 0 if w.finished_any else self._barren + 1
            if self._barren >= MAX_BARREN_DEATHS:
                self.problem = (f"{self._barren} worker processes in a row exited (last exit code {code}) "
                                "before finishing a task: the workers cannot start; see the log above")
            self._workers[self._workers.index(w)] = self._spawn()
            self._dispatch()
        log.warning("worker process %s (pid %s) exited with code %s%s", w.proc.name, w.proc.pid, code,
                    f" while running task {running[0]}" if running else "")
        if running is not None and not running[1].done() and running[0] == w.cancelled:
            running[1].set_exception(self.cancelled_error(
                f"it was force-cancelled while running: its worker process (pid {w.proc.pid}) was killed"))
        elif running is not None and not running[1].done():
            running[1].set_exception(WorkerLost(
                f"Task failure due to loss of a worker process on host {socket.gethostname()}: the "
                f"process running this task died (exit code {code}: killed, out of memory, os._exit "
                "or a crash)"
            ))
