"""Expiry of task records and results: a task is deleted ``task_ttl_s`` after it completed
(upstream keeps tasks 14 days) and never while it is unfinished -- its future still waits for
it, and the outbox may still need its arguments; task groups go once their last task is gone;
stored submissions (request ids) ``task_ttl_s`` after they were made, unless a task of theirs
may still have to be published (the outbox rebuilds its message from the submission's
headers).  Routes treat an expired task as absent (:func:`unexpired`), so the periodic purge
only reclaims space.  The purge also drops the arguments of completed tasks, which only the
outbox needed."""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import ColumnElement, delete, exists, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from volley.service.models import TERMINAL_STATES, Submission, Task, TaskGroup

log = logging.getLogger(__name__)


def unexpired(cutoff: float) -> ColumnElement[bool]:
    """The tasks that have not expired when the TTL started at ``cutoff``: every unfinished one,
    and those that completed since (a finished task's ``updated_at`` is its completion time)."""
    return or_(Task.status.not_in(TERMINAL_STATES), Task.updated_at >= cutoff)


def is_expired(task: Task, cutoff: float) -> bool:
    """:func:`unexpired`, negated, for one loaded task."""
    return task.status in TERMINAL_STATES and task.updated_at < cutoff


def purge_expired(
    sessions: sessionmaker[Session], ttl_s: float, *, now: float | None = None, chunk: int = 5000
) -> tuple[int, int]:
    """Delete expired tasks, then empty expired task groups; return how many of each.  Works in
    chunks so a large backlog never holds a long write lock (SQLite has one writer)."""
    cutoff = (time.time() if now is None else now) - ttl_s
    tasks = groups = 0
    while True:
        with sessions() as s:
            expired = select(Task.id).where(Task.status.in_(TERMINAL_STATES), Task.updated_at < cutoff)
            ids = list(s.scalars(expired.limit(chunk)))
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


def purge_submissions(
    sessions: sessionmaker[Session], ttl_s: float, *, now: float | None = None, chunk: int = 5000
) -> int:
    """Delete stored submissions older than the TTL (their request ids may be used again),
    except those with a task that may still have to be published; return how many."""
    cutoff = (time.time() if now is None else now) - ttl_s
    count = 0
    after = ""  # the kept ones are passed over: ids are read in order, from after the last
    while True:
        with sessions() as s:
            ids = list(s.scalars(
                select(Submission.id).where(Submission.created_at < cutoff, Submission.id > after)
                .order_by(Submission.id).limit(chunk)
            ))
            if not ids:
                return count
            after = ids[-1]
            # an unfinished task keeps its arguments (the small partial index of those that do)
            needed = set(s.scalars(select(Task.submission_id).where(
                Task.payload.is_not(None), Task.status.not_in(TERMINAL_STATES), Task.submission_id.in_(ids))))
            gone = [i for i in ids if i not in needed]
            if gone:
                s.execute(delete(Submission).where(Submission.id.in_(gone)))
                s.commit()
            count += len(gone)


def release_payloads(sessions: sessionmaker[Session], *, chunk: int = 5000) -> int:
    """Drop the stored arguments of completed tasks (kept only to rebuild an unfinished task's
    message); return how many.  Reads the small partial index of tasks that still hold some."""
    count = 0
    while True:
        with sessions() as s:
            ids = list(s.scalars(
                select(Task.id).where(Task.payload.is_not(None), Task.status.in_(TERMINAL_STATES)).limit(chunk)
            ))
            if not ids:
                return count
            s.execute(update(Task).where(Task.id.in_(ids)).values(payload=None))
            s.commit()
            count += len(ids)


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
                submissions = purge_submissions(self.sessions, self.ttl_s)
                payloads = release_payloads(self.sessions)
            except Exception:  # the database may be briefly away; the next round catches up
                log.exception("purging expired tasks failed; retrying in %.0fs", self.interval_s)
            else:
                if tasks or groups or submissions:
                    log.info("purged %d expired tasks, %d task groups and %d submissions",
                             tasks, groups, submissions)
                if payloads:
                    log.info("dropped the stored arguments of %d completed tasks", payloads)
            self._stop_event.wait(self.interval_s)
