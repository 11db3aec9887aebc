"""Cancelling tasks (docs/service.md, "Cancelling tasks").

A task still in the service's outbox is cancelled here: its state becomes ``cancelled`` and the
outbox never publishes it.  So is a task whose endpoint said it stopped (a Volley agent's final
status report): nothing runs it now, and when the endpoint starts again it applies the cancel
notice waiting in its control queue before it runs any task.  Every open task's endpoint gets a
cancel notice on its control queue (volley.protocol.control), before anything is committed; for
the other tasks the endpoint decides: a task it has not started is dropped and answered
with a ``TaskCancelled`` result; a running one runs on (or, with ``force``, on an engine that can,
is stopped and answered the same way).  The router stores that result as ``cancelled``; the
first result stored wins, so a task ends either ``cancelled`` or with its own result, never both.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, cast

from fastapi import APIRouter, Depends
from pydantic import BaseModel
from sqlalchemy import Table, false, select, update
from typing_extensions import TypedDict

from volley.protocol import topology as topo
from volley.protocol.codec import pack_result
from volley.protocol.codes import ApiCode, ResultCode
from volley.protocol.control import CANCELS_FIRST, pack_cancel
from volley.service.errors import (
    COMMON_RESPONSES,
    ApiError,
    ErrorBody,
    broker_unavailable,
    not_found,
)
from volley.service.models import TERMINAL_STATES, Endpoint, Task
from volley.service.routes.common import Caller, caller, invalid, live_tasks, owned, task_expired

router = APIRouter(tags=["tasks"], responses=COMMON_RESPONSES)
_TASKS = cast(Table, Task.__table__)
_BROKER_ERRORS = (ConnectionError, TimeoutError)
MAX_CANCEL = 10_000  # task ids in one request

# what a cancel request did with each task
CANCELLED = "cancelled"  # in the service's outbox, or its endpoint offline: cancelled, it never runs
REQUESTED = "requested"  # its endpoint was told; the task resolves as cancelled or with its result
FINISHED = "finished"  # it had completed (or was cancelled) already: nothing to do


class CancelBody(BaseModel):
    task_ids: list[str]
    force: bool = False


class CancelAnswer(TypedDict):
    results: dict[str, str]


def _check_force(c: Caller, endpoint_ids: set[str]) -> None:
    """Refuse a force-cancel for endpoints whose engine cannot stop a running task (their
    status report says so)."""
    for ep in c.session.scalars(select(Endpoint).where(Endpoint.id.in_(sorted(endpoint_ids)))):
        report = ep.status_report or {}
        if report.get("force_cancel") is not True:
            engine = report.get("engine_type")
            raise ApiError(
                409, ApiCode.CANCEL_NOT_SUPPORTED,
                    f"endpoint {ep.id} runs {engine or 'an engine that has not reported yet'}, which cannot "
                "stop a running task: force-cancel works on ProcessPoolEngine endpoints. Cancel without "
                "force to drop tasks that have not started",
            )


def _stopped(c: Caller, endpoint_ids: set[str]) -> set[str]:
    """Which of ``endpoint_ids`` said they stopped: their last status report is a Volley agent's
    final one (``active`` false, sent after its engine shut down) and one that applies its cancel
    notices before it runs any task when it starts again.  None of their tasks runs before the
    notice is applied.  Silence is not enough: an endpoint whose heartbeats stopped (a broker
    outage, a lock, a paused process) may still be running the task, and an endpoint that never
    reported may be an upstream one, which keeps no cancels."""
    if not endpoint_ids:
        return set()
    rows = c.session.scalars(select(Endpoint).where(Endpoint.id.in_(sorted(endpoint_ids))))
    return {ep.id for ep in rows if ep.last_heartbeat is not None and _said_stopped(ep.status_report or {})}


def _said_stopped(report: dict[str, Any]) -> bool:
    return report.get("active") is False and report.get(CANCELS_FIRST) is True


def cancel_tasks(c: Caller, tasks: list[Task], force: bool) -> dict[str, str]:
    # a task cancelled already (by an earlier request whose answer was lost) is answered
    # cancelled again: a repeat of a request must get the same answer
    out = {t.id: CANCELLED if t.status == "cancelled" else FINISHED for t in tasks if t.status in TERMINAL_STATES}
    open_tasks = [t for t in tasks if t.status not in TERMINAL_STATES]
    if not open_tasks:
        return out
    if force:
        _check_force(c, {t.endpoint_id for t in open_tasks})
    now = time.time()
    gateway = c.state.gateway
    # The notices go first, before anything is committed: a notice without the commit is
    # harmless (the endpoint drops a task the user asked to cancel, and answers so), while a
    # commit whose notice then failed would leave a task the service calls cancelled for the
    # endpoint to run.  A repeat of the request (after a 503) sends them again; the endpoint
    # applies a notice once however often it comes.
    by_endpoint: dict[str, list[str]] = {}
    for t in open_tasks:  # unpublished ones too: the outbox may be publishing them just now
        by_endpoint.setdefault(t.endpoint_id, []).append(t.id)
    try:
        for endpoint_id, ids in by_endpoint.items():
            if not gateway.send_control(endpoint_id, pack_cancel(ids, force)):
                raise ConnectionError(f"the broker refused the cancel notice for endpoint {endpoint_id}")
    except _BROKER_ERRORS as exc:
        raise broker_unavailable(exc) from exc
    # a force-cancel is for running tasks: those are the endpoint's to stop
    stopped = set() if force else _stopped(c, {t.endpoint_id for t in open_tasks if t.published})
    claimed = []
    for t in open_tasks:
        if not t.published:
            text = f"TaskCancelled: task {t.id} was cancelled on request before it was queued"
            unpublished = [_TASKS.c.published == false()]
        elif t.endpoint_id in stopped:
            text = (f"TaskCancelled: task {t.id} was cancelled on request while its endpoint was stopped; "
                    "the endpoint drops it when it starts again")
            unpublished = []
        else:
            continue
        done = c.session.execute(
            update(_TASKS)
            .where(_TASKS.c.id == t.id, *unpublished, _TASKS.c.status.not_in(TERMINAL_STATES))
            .values(status="cancelled", exception=text, completion_t=now, updated_at=now, published=True,
                    forwarded=False, payload=None,
                    details={"error_code": ResultCode.TASK_CANCELLED, "error_message": text})
        )
        if getattr(done, "rowcount", 0) == 1:
            claimed.append((t, text))
    c.session.commit()
    try:
        if claimed:
            # through ``results``, so the router forwards the stored state to the SDK's queue.
            # Should this fail, the repeat answers cancelled (above), and the stored state still
            # reaches the stream: the endpoint answers the notice when it starts, and the router
            # forwards what it stored.
            gateway.publisher.publish_batch([
                (topo.RESULTS_EXCHANGE, topo.results_routing_key(t.endpoint_id),
                 pack_result(t.id, text, error_code=ResultCode.TASK_CANCELLED, error_message=text), None, None)
                for t, text in claimed
            ], mandatory=True)
    except _BROKER_ERRORS as exc:
        raise broker_unavailable(exc) from exc
    claimed_ids = {t.id for t, _ in claimed}
    for t in open_tasks:
        out[t.id] = CANCELLED if t.id in claimed_ids else REQUESTED
    return out


@router.post("/v2/tasks/cancel", responses={409: {"model": ErrorBody}, 503: {"model": ErrorBody}})
def cancel_many(body: CancelBody, c: Caller = Depends(caller)) -> CancelAnswer:
    """Cancel the listed tasks the caller owns; ``results`` maps each to ``cancelled``,
    ``requested`` or ``finished``.  Other ids (unknown, malformed, expired, someone else's)
    are simply absent, as in ``/v2/batch_status``."""
    if len(body.task_ids) > MAX_CANCEL:
        raise invalid(f"task_ids: {len(body.task_ids)} ids exceed the limit of {MAX_CANCEL}; send fewer at once")
    wanted = []
    for tid in body.task_ids:
        try:
            wanted.append(str(uuid.UUID(tid)))
        except (ValueError, AttributeError, TypeError):
            continue
    live = live_tasks(c)
    tasks: list[Any] = []
    for i in range(0, len(wanted), 500):
        tasks.extend(c.session.scalars(select(Task).where(
            Task.id.in_(wanted[i : i + 500]), Task.owner_id == c.user_id, live)))
    return {"results": cancel_tasks(c, tasks, body.force)}


@router.post("/v2/tasks/{task_id}/cancel", responses={409: {"model": ErrorBody}, 503: {"model": ErrorBody}})
def cancel_one(task_id: str, force: bool = False, c: Caller = Depends(caller)) -> CancelAnswer:
    """Cancel one task (404 if it is not the caller's)."""
    t = owned(c, Task, task_id, "task")
    if task_expired(c, t):
        raise not_found("task", task_id)
    return {"results": cancel_tasks(c, [t], force)}
