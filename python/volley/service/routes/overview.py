"""Overviews of the caller's objects, for the dashboard and ``volley tasks`` (our extension,
under ``/volley/v1``): endpoints with their last heartbeat, task groups with counts by state,
and one task group's summary (counts, throughput over time, the latest failures).

Read-only, owner-checked like every route (another user's task group answers 404), and
bounded: lists come in pages, a summary's series and failures have fixed maxima.  Counting is
done by the database (``GROUP BY``), never by loading a group's tasks.
"""

from __future__ import annotations

import math
import time
from typing import Any

from fastapi import APIRouter, Depends
from sqlalchemy import BigInteger, and_, cast, func, or_, select

from volley.service.errors import COMMON_RESPONSES
from volley.service.models import TERMINAL_STATES, Endpoint, Task, TaskGroup
from volley.service.routes.common import (
    Caller,
    caller,
    check_limit,
    cursor,
    invalid,
    live_tasks,
    owned,
    parse_cursor,
    task_cutoff,
)
from volley.service.routes.endpoints import endpoint_status
from volley.service.schemas import (
    EndpointPage,
    TaskFailure,
    TaskGroupOverview,
    TaskGroupPage,
    TaskGroupSummary,
    Throughput,
)

router = APIRouter(prefix="/volley/v1", tags=["overview"], responses=COMMON_RESPONSES)

STATES = ("waiting-for-ep", *TERMINAL_STATES)
# default and largest page of the lists
MAX_PAGE = 100
# default and largest number of failures in a summary
MAX_FAILURES = 100
# an error text is cut to its last characters (a traceback ends with the error itself)
MAX_ERROR_CHARS = 4000
# a throughput series has at most this many buckets, each a "round" number of seconds
MAX_BUCKETS = 60
_BUCKET_SIZES = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 21600, 43200, 86400)


def _report_int(report: dict[str, Any] | None, key: str) -> int | None:
    value = (report or {}).get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@router.get("/endpoints")
def endpoint_overview(limit: int | None = None, after: str | None = None,
                      c: Caller = Depends(caller)) -> EndpointPage:
    """The caller's endpoints, oldest first, at most ``limit`` (default and maximum 100) from
    the cursor ``after``: status, last heartbeat, and workers and queue depth as the endpoint
    last reported them."""
    size = check_limit(limit, MAX_PAGE)
    q = (select(Endpoint).where(Endpoint.owner_id == c.user_id)
         .order_by(Endpoint.created_at, Endpoint.id).limit(size + 1))
    if after is not None:
        ts, key = parse_cursor(after, "endpoint page")
        q = q.where(or_(Endpoint.created_at > ts, and_(Endpoint.created_at == ts, Endpoint.id > key)))
    rows = list(c.session.scalars(q))
    now = time.time()
    page: EndpointPage = {"endpoints": [
        {
            "endpoint_id": ep.id, "name": ep.name, "display_name": ep.display_name,
            "status": endpoint_status(ep, now), "last_heartbeat": ep.last_heartbeat,
            "heartbeat_period": ep.heartbeat_period,
            "engine_type": (ep.status_report or {}).get("engine_type"),
            "total_workers": _report_int(ep.status_report, "total_workers"),
            "idle_workers": _report_int(ep.status_report, "idle_workers"),
            "outstanding_tasks": _report_int(ep.status_report, "outstanding_tasks"),
            "queue_depth": _report_int(ep.status_report, "queue_depth"),
        } for ep in rows[:size]
    ]}
    if len(rows) > size:
        page["next"] = cursor(rows[size - 1].created_at, rows[size - 1].id)
    return page


def _counts(c: Caller, group_ids: list[str]) -> dict[str, dict[str, int]]:
    """Tasks by state of each group (expired tasks left out), every state present."""
    out = {g: dict.fromkeys(STATES, 0) for g in group_ids}
    if not group_ids:
        return out
    q = (select(Task.task_group_id, Task.status, func.count())
         .where(Task.task_group_id.in_(group_ids), live_tasks(c))
         .group_by(Task.task_group_id, Task.status))
    for gid, status, n in c.session.execute(q):
        out[gid][status] = out[gid].get(status, 0) + int(n)
    return out


def _overview(group: Any, counts: dict[str, int]) -> TaskGroupOverview:
    return {"task_group_id": group.id, "created_at": group.created_at, "updated_at": group.updated_at,
            "total": sum(counts.values()), "counts": counts}


@router.get("/task_groups")
def task_group_overview(limit: int | None = None, after: str | None = None,
                        c: Caller = Depends(caller)) -> TaskGroupPage:
    """The caller's task groups that have not expired, newest first, at most ``limit``
    (default and maximum 100) from the cursor ``after``, each with its tasks counted by state."""
    size = check_limit(limit, MAX_PAGE)
    q = (select(TaskGroup.id, TaskGroup.created_at, TaskGroup.updated_at)
         .where(TaskGroup.owner_id == c.user_id, TaskGroup.updated_at >= task_cutoff(c))
         .order_by(TaskGroup.created_at.desc(), TaskGroup.id.desc()).limit(size + 1))
    if after is not None:
        ts, key = parse_cursor(after, "task group list")
        q = q.where(or_(TaskGroup.created_at < ts, and_(TaskGroup.created_at == ts, TaskGroup.id < key)))
    rows = list(c.session.execute(q))
    counts = _counts(c, [r.id for r in rows[:size]])
    page: TaskGroupPage = {"task_groups": [_overview(r, counts[r.id]) for r in rows[:size]]}
    if len(rows) > size:
        page["next"] = cursor(rows[size - 1].created_at, rows[size - 1].id)
    return page


def bucket_size(span_s: float) -> int:
    """The smallest round bucket (seconds) that fits ``span_s`` into ``MAX_BUCKETS`` buckets."""
    for size in _BUCKET_SIZES:
        if span_s <= size * MAX_BUCKETS:
            return size
    return math.ceil(span_s / MAX_BUCKETS / 86400) * 86400


def _throughput(c: Caller, group_id: str, start: float | None, end: float) -> Throughput:
    """Completions per bucket from ``start`` (the first submission) to ``end``, counted by the
    database: the bucket index is integer arithmetic on milliseconds, which SQLite and
    PostgreSQL evaluate alike (truncating division of non-negative integers)."""
    if start is None:
        return {"start": None, "bucket_s": 1, "success": [], "failed": []}
    size = bucket_size(max(0.0, end - start))
    n = min(MAX_BUCKETS, int((end - start) // size) + 1)
    series = {s: [0] * n for s in TERMINAL_STATES}
    start_ms, size_ms = int(start * 1000), size * 1000
    index = (cast(Task.completion_t * 1000, BigInteger) - start_ms) // size_ms
    q = (select(index, Task.status, func.count())
         .where(Task.task_group_id == group_id, Task.status.in_(TERMINAL_STATES),
                Task.completion_t.is_not(None), Task.updated_at >= task_cutoff(c))
         .group_by(index, Task.status))
    for i, status, count in c.session.execute(q):
        series[status][min(n - 1, max(0, int(i)))] += int(count)
    return {"start": start, "bucket_s": size, "success": series["success"], "failed": series["failed"]}


def _failures(c: Caller, group_id: str, most: int) -> list[TaskFailure]:
    q = (select(Task.id, Task.completion_t, Task.exception, Task.details)
         .where(Task.task_group_id == group_id, Task.status == "failed", Task.updated_at >= task_cutoff(c))
         .order_by(Task.completion_t.desc(), Task.id).limit(most))
    out: list[TaskFailure] = []
    for tid, completed, text, details in c.session.execute(q):
        text = text or ""
        code = (details or {}).get("error_code")
        out.append({"task_id": tid, "completion_t": completed, "error_code": code if isinstance(code, str) else None,
                    "exception": text[-MAX_ERROR_CHARS:], "truncated": len(text) > MAX_ERROR_CHARS})
    return out


@router.get("/task_groups/{task_group_id}")
def task_group_summary(task_group_id: str, failures: int = 20, c: Caller = Depends(caller)) -> TaskGroupSummary:
    """One task group: its tasks counted by state, completions over time (at most 60 buckets
    from the first submission to the last completion, or to now while tasks are pending), the
    overall rate, and its latest ``failures`` (default 20, at most 100) with their error text."""
    if not 0 <= failures <= MAX_FAILURES:
        raise invalid(f"failures: {failures} is not between 0 and {MAX_FAILURES}")
    group = owned(c, TaskGroup, task_group_id, "task group")
    counts = _counts(c, [group.id])[group.id]
    first, last = c.session.execute(
        select(func.min(Task.created_at), func.max(Task.completion_t))
        .where(Task.task_group_id == group.id, live_tasks(c))
    ).one()
    done = counts["success"] + counts["failed"]
    pending = sum(counts.values()) - done
    end = time.time() if pending or last is None else last
    rate = done / (last - first) if done and last is not None and first is not None and last > first else None
    return {
        **_overview(group, counts),
        "first_submitted": first, "last_completed": last, "rate_per_s": rate,
        "throughput": _throughput(c, group.id, first, end),
        "failures": _failures(c, group.id, failures) if failures else [],
    }
