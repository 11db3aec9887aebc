"""Submission and results: batch submit, task status, batch status, task groups, and the AMQP
URL from which an SDK streams its results."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, cast

from fastapi import APIRouter, Depends
from sqlalchemy import Table, and_, false, func, insert, or_, select
from sqlalchemy.exc import DBAPIError, IntegrityError

from volley.protocol import topology as topo
from volley.protocol.codec import pack_task
from volley.protocol.codes import ApiCode
from volley.protocol.messages import TASK_ENVELOPE_SIZE, escaped_size
from volley.service.broker_admin import BrokerAdminError
from volley.service.errors import (
    COMMON_RESPONSES,
    ApiError,
    ErrorBody,
    broker_unavailable,
    not_found,
)
from volley.service.models import (
    TERMINAL_STATES,
    Endpoint,
    Function,
    Submission,
    Task,
    TaskGroup,
    User,
)
from volley.service.outbox import INTERVAL_S, mark_published
from volley.service.payloads import MalformedPayload, check_frames
from volley.service.routes.common import (
    Caller,
    caller,
    check_limit,
    check_quota,
    cursor,
    invalid,
    iso,
    live_tasks,
    owned,
    owned_columns,
    parse_cursor,
    task_cutoff,
    task_expired,
)
from volley.service.schemas import (
    AmqpResultUrl,
    BatchStatus,
    BatchStatusBody,
    SubmitBody,
    Submitted,
    TaskDoc,
    TaskGroupDoc,
)

log = logging.getLogger(__name__)

router = APIRouter(tags=["tasks"], responses=COMMON_RESPONSES)
_TASKS = cast(Table, Task.__table__)
_SUBMISSIONS = cast(Table, Submission.__table__)
_BROKER_ERRORS = (ConnectionError, TimeoutError, BrokerAdminError)
# task messages built and confirmed at a time: a submit holds one chunk of messages (each the
# function's code followed by the task's arguments) in memory, not the whole request
PUBLISH_CHUNK = 500


def _task_group(c: Caller, requested: uuid.UUID | None, now: float) -> TaskGroup:
    """The caller's task group ``requested`` (created if new), or a new one."""
    tg_id = str(requested) if requested else str(uuid.uuid4())
    group = c.session.get(TaskGroup, tg_id)
    if group is None:
        check_quota(c, TaskGroup, "task groups", "max_task_groups_per_user", TaskGroup.updated_at >= task_cutoff(c))
        try:
            c.session.add(TaskGroup(id=tg_id, owner_id=c.user_id, created_at=now, updated_at=now))
            c.session.commit()
        except IntegrityError:  # another submission created it a moment ago
            c.session.rollback()
        group = c.session.get(TaskGroup, tg_id)
    if group is None or group.owner_id != c.user_id:
        raise not_found("task group", tg_id)
    return group


def _validate(c: Caller, endpoint_id: str, body: SubmitBody) -> tuple[Any, dict[str, Any]]:
    """The endpoint and the functions of a submission, once everything about it checks out."""
    ep = owned_columns(c, Endpoint, endpoint_id, "endpoint", "allowed_functions")
    if not body.tasks or not all(body.tasks.values()):
        raise invalid("tasks: every function id needs at least one task payload")
    count, limit = sum(len(p) for p in body.tasks.values()), c.state.settings.max_tasks_per_submit
    if count > limit:
        raise ApiError(
            413, ApiCode.TOO_MANY_TASKS,
            f"{count} tasks in one submit request exceed the limit of {limit} (service setting "
            "max_tasks_per_submit); send them in smaller batches",
        )
    functions = {str(fid): owned_columns(c, Function, str(fid), "function", "code", public_ok=True)
                 for fid in body.tasks}
    if ep.allowed_functions is not None:
        refused = sorted(set(functions) - set(ep.allowed_functions))
        if refused:
            raise ApiError(
                403, ApiCode.FUNCTION_NOT_ALLOWED,
                f"endpoint {ep.id} does not allow function(s) {', '.join(refused)}",
            )
    for fid, payloads in body.tasks.items():
        code = functions[str(fid)].code
        code_size: int | None = None
        for i, payload in enumerate(payloads):
            if len(code) + len(payload) > topo.MAX_PAYLOAD_SIZE:
                raise ApiError(
                    413, ApiCode.PAYLOAD_TOO_LARGE,
                    f"task {i} of function {fid}: function and arguments exceed the 10 MiB limit",
                )
            try:
                check_frames(payload, 2, f"task {i} of function {fid}")
            except MalformedPayload as exc:
                raise invalid(str(exc)) from None
            # the broker closes the channel on a message over its limit, and a stored task
            # would wait in the outbox for ever: refuse it now.  A character takes at most 6
            # bytes (an escape), so only large tasks need measuring, and the code only once.
            if TASK_ENVELOPE_SIZE + 6 * (len(code) + len(payload)) > topo.MAX_MESSAGE_SIZE:
                if code_size is None:
                    code_size = escaped_size(code)
                size = TASK_ENVELOPE_SIZE + code_size + escaped_size(payload)
                if size > topo.MAX_MESSAGE_SIZE:
                    raise ApiError(
                        413, ApiCode.PAYLOAD_TOO_LARGE,
                        f"task {i} of function {fid}: its message (function and arguments, as "
                        f"UTF-8 JSON) would take {size} bytes, over the broker's {topo.MAX_MESSAGE_SIZE} "
                        "byte (16 MiB) max_message_size; multi-byte characters and JSON escapes "
                        "count several bytes each: send smaller arguments",
                    )
    return ep, functions


def _check_outbox(c: Caller, count: int) -> None:
    """429 if the caller's tasks waiting in the outbox, with these ``count``, would pass the cap:
    while the broker is away (or the endpoint's queue full) one user must not fill the
    database, and the outbox rounds of everyone, with tasks that cannot be queued anyway."""
    cap = c.state.settings.max_queued_tasks_per_user
    if cap <= 0:
        return
    if count > cap:
        raise ApiError(
            413, ApiCode.TOO_MANY_TASKS,
            f"{count} tasks in one submit request exceed the limit of {cap} queued tasks per user "
            "(service setting max_queued_tasks_per_user); send them in smaller batches",
        )
    t = _TASKS.c
    # bounded: reads at most cap + 1 entries of the owner's outbox index
    mine = select(t.id).where(t.owner_id == c.user_id, t.published == false()).limit(cap + 1).subquery()
    queued = c.session.scalar(select(func.count()).select_from(mine)) or 0
    if queued + count > cap:
        raise ApiError(
            429, ApiCode.OUTBOX_FULL,
            f"{queued} tasks of yours wait in the service's outbox for the broker to take them, and "
            f"{count} more would pass the limit of {cap} (service setting max_queued_tasks_per_user); "
            "nothing was stored: send them again once those are queued (Volley's SDK waits and "
            "retries by itself)",
            headers={"Retry-After": str(max(1, round(INTERVAL_S)))},
        )


def _declare_result_queue(c: Caller, group: TaskGroup) -> None:
    try:
        c.state.gateway.declare_sdk_queue(topo.sdk_queue_prefix(c.user_id) + group.id, unless_recent=True)
    except _BROKER_ERRORS as exc:
        raise broker_unavailable(exc) from exc


def _stored(c: Caller, request_id: str) -> Submission | None:
    return c.session.scalars(
        select(Submission).where(Submission.owner_id == c.user_id, Submission.request_id == request_id)
    ).first()


def _replay(c: Caller, sub: Submission, endpoint_id: str, body: SubmitBody) -> Submitted:
    """The answer a submission gave, for a retry of it.  Queues nothing: a task of it that is
    still unpublished is the outbox's to publish."""
    if sub.endpoint_id != endpoint_id or (body.task_group_id and str(body.task_group_id) != sub.task_group_id):
        raise ApiError(
            409, ApiCode.REQUEST_ID_REUSED,
            f"request_id {sub.request_id} was already used for a submission to endpoint "
            f"{sub.endpoint_id} (task group {sub.task_group_id}); make a new request_id for a "
            "new submission",
        )
    if body.create_queue:
        group = c.session.get(TaskGroup, sub.task_group_id)
        if group is not None:
            _declare_result_queue(c, group)
    return _answer(sub)


def _answer(sub: Submission) -> Submitted:
    return {"request_id": sub.request_id, "task_group_id": sub.task_group_id,
            "endpoint_id": sub.endpoint_id, "tasks": {fid: list(ids) for fid, ids in sub.tasks}}


def _commit(c: Caller, sub: dict[str, Any], rows: list[dict[str, Any]]) -> Submission | None:
    """Store the submission and its tasks in one commit; return None, or the submission that
    won a race for the same request id."""
    try:
        c.session.execute(insert(_SUBMISSIONS), [sub])
        c.session.execute(insert(_TASKS), rows)  # Core insert: one executemany, no ORM bookkeeping
        c.session.commit()
        return None
    except IntegrityError:
        # most likely a concurrent request with the same request id: the unique constraint
        # decided, and its answer is ours
        c.session.rollback()
        winner = _stored(c, sub["request_id"])
        if winner is None:
            raise
        return winner
    except DBAPIError as exc:
        c.session.rollback()
        raise ApiError(
            503, ApiCode.DATABASE_UNAVAILABLE,
            f"the database did not store the submission ({type(exc.orig).__name__}); nothing "
            "was queued -- retry with the same request_id, which answers the same task ids if "
            "it was stored after all",
        ) from exc


def _publish(c: Caller, endpoint_id: str, functions: dict[str, Any], rows: list[dict[str, Any]],
             body: SubmitBody) -> str | None:
    """Publish the committed tasks, ``PUBLISH_CHUNK`` messages built and confirmed at a time,
    and take what the broker confirmed out of the outbox.  A failure is logged, not raised: the
    tasks are stored and the outbox publishes the rest.  Returns what the client should know
    about tasks left waiting, if any."""
    confirmed: set[str] = set()
    warning = None
    for i in range(0, len(rows), PUBLISH_CHUNK):
        messages = [(r["id"], r["function_id"], pack_task(r["id"], functions[r["function_id"]].code + r["payload"]))
                    for r in rows[i : i + PUBLISH_CHUNK]]
        try:
            done = c.state.gateway.publish_tasks(
                endpoint_id, messages,
                resource_specification=body.resource_specification,
                result_serializers=body.result_serializers,
                max_retries_on_system_failure=body.max_retries_on_system_failure,
            )
        except _BROKER_ERRORS as exc:
            log.warning("publishing %d tasks for endpoint %s failed (%s); the outbox will publish them",
                        len(rows) - i, endpoint_id, exc)
            warning = (f"{len(rows) - len(confirmed)} of {len(rows)} tasks wait in the service's "
                       f"outbox: the broker did not take them ({exc}); they are queued when it does")
            break
        del messages
        confirmed |= done
        if len(done) < len(rows[i : i + PUBLISH_CHUNK]):
            # refused: the endpoint's queue is full (reject-publish); so would the rest be
            warning = (f"{len(rows) - len(confirmed)} of {len(rows)} tasks wait in the service's "
                       f"outbox: {c.state.gateway.task_queue_full(endpoint_id)}; they are queued "
                       "as the endpoint takes tasks")
            log.warning("submission to endpoint %s: %s", endpoint_id, warning)
            break
    if not confirmed:
        return warning
    try:
        mark_published(c.session, list(confirmed))
        c.session.commit()
    except DBAPIError as exc:  # then the outbox publishes them again: a harmless duplicate
        c.session.rollback()
        log.warning("could not mark %d published tasks (%s)", len(confirmed), exc.orig)
    return warning


@router.post(
    "/v3/endpoints/{endpoint_id}/submit",
    responses={
        403: {"model": ErrorBody},
        409: {"model": ErrorBody, "description": "request_id already used for another submission"},
        503: {"model": ErrorBody, "description": "nothing was queued (broker or database unavailable)"},
    },
)
def submit(endpoint_id: str, body: SubmitBody, c: Caller = Depends(caller)) -> Submitted:
    """Queue a batch of tasks; with ``create_queue`` the task group's result queue exists
    before this answers.  A repeated ``request_id`` gets the first answer again.  200 means
    the tasks are stored and will be queued: those the broker did not confirm at once stay in
    the outbox, which publishes them as soon as it can."""
    ep, functions = _validate(c, endpoint_id, body)
    request_id = str(body.request_id) if body.request_id else str(uuid.uuid4())
    if body.request_id:
        previous = _stored(c, request_id)
        if previous is not None:
            return _replay(c, previous, ep.id, body)
    _check_outbox(c, sum(len(p) for p in body.tasks.values()))

    now = time.time()
    group = _task_group(c, body.task_group_id, now)
    state = c.state
    if body.create_queue:
        _declare_result_queue(c, group)
        if not group.has_queue:
            group.has_queue = True
        # the SDK that submits last is the one reading the queue
        if group.result_batches != body.volley_result_batches:
            group.result_batches = body.volley_result_batches
    # the group's TTL clock: a write per submission would only move it by milliseconds
    if now - group.updated_at > min(60.0, state.settings.task_ttl_s / 10):
        group.updated_at = now

    sub_id = str(uuid.uuid4())
    rows: list[dict[str, Any]] = []
    out: dict[str, list[str]] = {}
    for fid_key, payloads in body.tasks.items():
        fn = functions[str(fid_key)]
        ids = out[fn.id] = []
        for payload in payloads:
            tid = str(uuid.uuid4())
            ids.append(tid)
            rows.append({
                "id": tid, "owner_id": c.user_id, "task_group_id": group.id, "endpoint_id": ep.id,
                "function_id": fn.id, "status": "waiting-for-ep", "forwarded": False,
                "created_at": now, "updated_at": now, "submission_id": sub_id, "payload": payload,
                "published": False,
            })
    sub = {
        "id": sub_id, "owner_id": c.user_id, "request_id": request_id, "endpoint_id": ep.id,
        "task_group_id": group.id, "tasks": [[fid, ids] for fid, ids in out.items()],
        "resource_specification": body.resource_specification,
        "result_serializers": body.result_serializers,
        "max_retries_on_system_failure": body.max_retries_on_system_failure, "created_at": now,
    }
    # committed before publishing, so a result can never arrive for a task the router does
    # not know, and a crash after this commit leaves the tasks to the outbox, not lost
    winner = _commit(c, sub, rows)
    if winner is not None:
        return _replay(c, winner, ep.id, body)
    with state.gateway.publishing(sub_id):
        warning = _publish(c, ep.id, functions, rows, body)
    answer: Submitted = {"request_id": request_id, "task_group_id": group.id, "endpoint_id": ep.id,
                         "tasks": out}
    if warning:
        answer["warning"] = warning
    return answer


def task_doc(t: Task) -> TaskDoc:
    doc: TaskDoc = {"task_id": t.id, "status": t.status, "task_group_id": t.task_group_id}
    if t.status in TERMINAL_STATES:
        doc["completion_t"] = str(t.completion_t)
        doc["details"] = t.details or {}
        if t.exception is not None:
            doc["exception"] = t.exception
        elif t.result is not None:
            doc["result"] = t.result
        else:
            doc["reason"] = "unknown"
    return doc


@router.get("/v2/tasks/{task_id}")
def get_task(task_id: str, c: Caller = Depends(caller)) -> TaskDoc:
    t = owned(c, Task, task_id, "task")
    if task_expired(c, t):
        raise not_found("task", task_id)
    return task_doc(t)


@router.post("/v2/batch_status")
def batch_status(body: BatchStatusBody, c: Caller = Depends(caller)) -> BatchStatus:
    """Status of each listed task the caller owns; other ids (unknown, malformed, expired,
    someone else's) are simply absent from ``results``."""
    wanted = []
    for tid in body.task_ids:
        try:
            wanted.append(str(uuid.UUID(tid)))
        except (ValueError, AttributeError):
            continue
    live = live_tasks(c)
    results: dict[str, TaskDoc] = {}
    for i in range(0, len(wanted), 500):
        q = select(Task).where(Task.id.in_(wanted[i : i + 500]), Task.owner_id == c.user_id, live)
        for t in c.session.scalars(q):
            results[t.id] = task_doc(t)
    return {"response": "batch", "results": results}


@router.get("/v2/taskgroup/{task_group_id}", responses={503: {"model": ErrorBody}})
def get_task_group(task_group_id: str, limit: int | None = None, after: str | None = None,
                   volley_result_batches: bool = False, c: Caller = Depends(caller)) -> TaskGroupDoc:
    """The group's tasks, oldest first, at most ``limit`` (default and maximum: the setting
    ``max_task_group_page``) from the position ``after``; ``next``, present when more follow,
    is the ``after`` of the next page.  The first page also (re)declares the group's result
    queue, so an SDK reloading the group (``Executor.reload_tasks``) streams whatever is still
    to come; ``volley_result_batches`` (Volley's SDK) says that SDK reads result batches."""
    size = check_limit(limit, c.state.settings.max_task_group_page, "max_task_group_page")
    position = parse_cursor(after, "task group page") if after is not None else None
    group = owned(c, TaskGroup, task_group_id, "task group")
    if position is None:
        try:
            c.state.gateway.declare_sdk_queue(topo.sdk_queue_prefix(c.user_id) + group.id)
        except _BROKER_ERRORS as exc:
            raise broker_unavailable(exc) from exc
        if not group.has_queue or group.result_batches != volley_result_batches:
            group.has_queue = True
            group.result_batches = volley_result_batches
            c.session.commit()
    q = (select(Task.id, Task.created_at)
         .where(Task.task_group_id == group.id, live_tasks(c))
         .order_by(Task.created_at, Task.id)
         .limit(size + 1))
    if position is not None:
        q = q.where(or_(Task.created_at > position[0],
                        and_(Task.created_at == position[0], Task.id > position[1])))
    rows = list(c.session.execute(q))
    doc: TaskGroupDoc = {"taskgroup_id": group.id,
                         "tasks": [{"id": i, "created_at": iso(ts)} for i, ts in rows[:size]]}
    if len(rows) > size:
        last_id, last_ts = rows[size - 1]
        doc["next"] = cursor(last_ts, last_id)
    return doc


@router.get("/v2/get_amqp_result_connection_url", responses={503: {"model": ErrorBody}})
def amqp_result_url(c: Caller = Depends(caller)) -> AmqpResultUrl:
    """Broker URL with the caller's own credentials: they can read ``<queue_prefix>*`` and
    nothing else.  ``volley_result_sender`` (ours; upstream SDKs ignore it) is the broker user
    that publishes every result into those queues: a delivery without it is not the service's."""
    try:
        salt = c.session.scalar(select(User.broker_salt).where(User.id == c.user_id)) or ""
        url = c.state.credentials.for_user(c.user_id, salt)
    except _BROKER_ERRORS as exc:
        raise broker_unavailable(exc) from exc
    return {"connection_url": url, "queue_prefix": topo.sdk_queue_prefix(c.user_id),
            "volley_result_sender": c.state.credentials.result_sender}
