"""Expiry of task records and results: deleted ``task_ttl_s`` after their last change
(upstream keeps tasks 14 days), task groups once their last task is gone.  Routes already
treat an expired task as absent, so the periodic purge only reclaims space."""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import delete, exists, select
from sqlalchemy.orm import Session, sessionmaker

from volley.service.models import Task, TaskGroup

log = logging.getLogger(__name__)


def purge_expired(
    sessions: sessionmaker[Session], ttl_s: float, *, now: float | None = None, chunk: int = 5000
) -> tuple[int, int]:
    """Delete expired tasks, then empty expired task groups; return how many of each.  Works in
    chunks so a large backlog never holds a long write lock (SQLite has one writer)."""
    cutoff = (time.time() if now is None else now) - ttl_s
    tasks = groups = 0
    while True:
        with sessions() as s:
            ids = list(s.scalars(select(Task.id).where(Task.updated_at < cutoff).limit(chunk)))
            if not ids:
                break
            s.execute(delete(Task).where(Task.id.in_(ids)))
            s.commit()
            tasks += len(ids)
    while True:
        with sessions() as s:
            ids = list(
                s.scalars(
                    select(TaskGroup.id)
                    .where(TaskGroup.updated_at < cutoff, ~exists().where(Task.task_group_id == TaskGroup.id))
                    .limit(chunk)
                )
            )
            if not ids:
                break
            s.execute(delete(TaskGroup).where(TaskGroup.id.in_(ids)))
            s.commit()
            groups += len(ids)
    return tasks, groups


class Purger(threading.Thread):
    def __init__(self, sessions: sessionmaker[Session], ttl_s: float, interval_s: float) -> None:
        super().__init__(name="volley-purge", daemon=True)
        self.sessions, self.ttl_s, self.interval_s = sessions, ttl_s, interval_s
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                tasks, groups = purge_expired(self.sessions, self.ttl_s)
            except Exception:  # the database may be briefly away; the next round catches up
                log.exception("purging expired tasks failed; retrying in %.0fs", self.interval_s)
            else:
                if tasks or groups:
                    log.info("purged %d expired tasks and %d task groups", tasks, groups)
            self._stop_event.wait(self.interval_s)
