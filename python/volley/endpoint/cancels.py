"""``<endpoint dir>/cancelled_tasks/ids``: tasks cancelled before they reached this endpoint.

A cancel notice (:mod:`volley.endpoint.control`) may name a task the endpoint has not received
yet: it waits in the task queue behind any number of others, or comes back from the broker
after the agent was killed.  Its id is written here, and fsynced, before the notice is acked,
so the task is dropped whenever it is delivered -- by this run of the agent or a later one.

One record per line, appended:

``C <task id> <time>``  the task was cancelled (one ``write(2)`` and one fsync per batch of notices)
``S <task id> <time>``  it was delivered and dropped (no fsync: losing one only keeps an id longer)

A write that fails (a full disk) is cut back to the last whole line and raises ``OSError``; the
ids stay known in memory, and the caller keeps the notice unacked until a later write works.  A
torn last line (the agent died mid-write) is ignored.  An id is forgotten a day after its task
was dropped (a redelivery of that delivery comes long before), or :data:`KEEP_S` after its
cancel (the service forgets a task by then), or -- past :data:`MAX_IDS`, the task queue's own
bound -- oldest first, with a warning.  The file is rewritten with only the live ids when it
opens and whenever dead lines outnumber live ones.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path

from volley.private_files import open_private_append, private_dir, write_private

log = logging.getLogger(__name__)

# the service's default task_ttl_s: a task cancelled this long ago is gone from the service too
KEEP_S = 14 * 24 * 3600.0
# how long a dropped task's id is kept, for a redelivery of the same delivery
SEEN_KEEP_S = 24 * 3600.0
# the service's default task_queue_max_length: no more cancelled tasks can wait in the queue
MAX_IDS = 1_000_000


def _task_id(text: str) -> str | None:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None


class CancelRecord:
    """Ids of tasks cancelled and not received.  :meth:`add` is called by the control queue's
    thread, the rest by the task intake's; a lock orders their changes."""

    def __init__(self, directory: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.dir = private_dir(directory)
        self.path = self.dir / "ids"
        self._clock = clock
        self._lock = threading.Lock()
        self._cancelled: OrderedDict[str, float] = OrderedDict()  # id -> when cancelled, oldest first
        self._dropped: dict[str, float] = {}  # id -> when its delivery was dropped
        self._lines = 0
        self._load()
        try:
            with self._lock:
                self._rewrite()
        except OSError as exc:  # a full disk at start: what was read still applies
            log.warning("could not rewrite %s (%s); the cancelled tasks it lists still apply", self.path, exc)

    def __contains__(self, task_id: str) -> bool:
        return task_id in self._cancelled

    def __len__(self) -> int:
        return len(self._cancelled)

    def _load(self) -> None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        whole = raw.rfind(b"\n") + 1
        if whole < len(raw):  # a torn last line: cut it, or the next append would run into it
            os.truncate(self.path, whole)
        lines = raw[:whole].decode(errors="replace").split("\n")[:-1]
        for line in lines:
            parts = line.split(" ")
            task_id = _task_id(parts[1]) if len(parts) == 3 else None
            if task_id is None or parts[0] not in ("C", "S"):
                continue
            try:
                t = float(parts[2])
            except ValueError:
                continue
            if parts[0] == "C":
                self._cancelled[task_id] = t
                self._cancelled.move_to_end(task_id)
            else:
                self._dropped[task_id] = t
        self._lines = len(lines)

    def _prune(self) -> None:
        now = self._clock()
        for task_id, t in list(self._dropped.items()):
            if t < now - SEEN_KEEP_S:
                del self._dropped[task_id]
                self._cancelled.pop(task_id, None)
        while self._cancelled:
            task_id, t = next(iter(self._cancelled.items()))
            if t >= now - KEEP_S:
                break
            del self._cancelled[task_id]
            self._dropped.pop(task_id, None)
        self._dropped = {k: v for k, v in self._dropped.items() if k in self._cancelled}

    def _rewrite(self) -> None:
        self._prune()
        lines = [f"C {task_id} {t:.0f}\n" for task_id, t in self._cancelled.items()]
        lines += [f"S {task_id} {t:.0f}\n" for task_id, t in self._dropped.items()]
        write_private(self.path, "".join(lines))
        self._lines = len(lines)

    def _append(self, text: str, *, fsync: bool) -> None:
        fd = open_private_append(self.path)
        try:
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                view = memoryview(text.encode())
                while view:
                    view = view[os.write(fd, view):]
                if fsync:
                    os.fsync(fd)
            except OSError:
                os.ftruncate(fd, start)  # no half line for the next append to run into
                raise
        finally:
            os.close(fd)
        self._lines += text.count("\n")

    def _maybe_rewrite(self) -> None:
        if self._lines > 2 * (len(self._cancelled) + len(self._dropped)) + 10_000:
            self._rewrite()

    def add(self, task_ids: Iterable[str]) -> None:
        """Remember ``task_ids`` as cancelled, on disk before this returns.  Raises ``OSError``
        when the disk refused them; they apply in memory all the same."""
        now = self._clock()
        ids = list(task_ids)
        with self._lock:
            for task_id in ids:
                self._cancelled[task_id] = now
                self._cancelled.move_to_end(task_id)
            forgotten = 0
            while len(self._cancelled) > MAX_IDS:
                old, _ = self._cancelled.popitem(last=False)
                self._dropped.pop(old, None)
                forgotten += 1
            if forgotten:
                log.warning("more than %d cancelled tasks have not reached this endpoint: forgot the %d "
                            "oldest cancels, and those tasks will run if they ever come", MAX_IDS, forgotten)
            self._append("".join(f"C {task_id} {now:.0f}\n" for task_id in ids), fsync=True)
            try:
                self._maybe_rewrite()
            except OSError as exc:  # the ids are on disk already; the file is only longer
                log.warning("could not rewrite %s: %s", self.path, exc)

    def dropped(self, task_id: str) -> None:
        """A delivery of cancelled ``task_id`` came and was dropped."""
        with self._lock:
            if task_id not in self._cancelled:
                return
            now = self._clock()
            self._dropped[task_id] = now
            try:
                self._append(f"S {task_id} {now:.0f}\n", fsync=False)
                self._maybe_rewrite()
            except OSError as exc:  # only tidiness is lost: the id is kept until KEEP_S
                log.debug("could not note dropped task %s in %s: %s", task_id, self.path, exc)
