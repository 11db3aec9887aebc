"""REST routes (reference/sdk.md §4, reference/endpoint-protocol.md §4).

Handlers are plain functions (FastAPI runs them on its thread pool): the database and broker
clients they use are blocking.  Anything a caller does not own answers 404, exactly as if it
did not exist.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Depends, Header, Request
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from volley.protocol import topology as topo
from volley.protocol.messages import pack_task
from volley.service.app import ApiError, ServiceState
from volley.service.db import TERMINAL_STATES, Endpoint, Function, Task, TaskGroup
from volley.service.gateway import PublishFailed
from volley.version import __version__

router = APIRouter()

MIN_SDK_VERSION = "0.1.0"
MIN_EP_VERSION = "0.1.0"


class Caller:
    def __init__(self, state: ServiceState, session: Session, user_id: str) -> None:
        self.state, self.session, self.user_id = state, session, user_id


def _state(request: Request) -> ServiceState:
    return request.app.state.volley


def caller(request: Request, authorization: str | None = Header(default=None)) -> Iterator[Caller]:
    state = _state(request)
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "UNAUTHORIZED", "missing bearer token: send 'Authorization: Bearer <token>'")
    with state.sessions() as session:
        user_id = state.tokens.user_for(session, token.strip())
        if user_id is None:
            raise ApiError(401, "UNAUTHORIZED", "unknown or revoked token; create one with `volley token create`")
        yield Caller(state, session, user_id)


def _uuid(value: str, what: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ApiError(404, "NOT_FOUND", f"{what} {value!r} not found") from None


def _owned(c: Caller, model: Any, ident: str, what: str) -> Any:
    row = c.session.get(model, _uuid(ident, what))
    if row is None or row.owner_id != c.user_id:
        raise ApiError(404, "NOT_FOUND", f"{what} {ident} not found")
    return row


# --- version ------------------------------------------------------------------------------------
@router.get("/v2/version")
def version(service: str | None = None) -> Any:
    info = {"api": __version__, "min_sdk_version": MIN_SDK_VERSION, "min_ep_version": MIN_EP_VERSION}
    if service == "all":
        return {**info, "git_sha": "volley", "service": "volley"}
    return info["api"]


# --- functions ----------------------------------------------------------------------------------
class FunctionBody(BaseModel):
    function_name: str
    function_code: str
    serialized: bool = True
    meta: dict[str, Any] | None = None
    description: str | None = None
    public: bool = False
    group: str | None = None
    ha_endpoint_id: str | None = None


@router.post("/v3/functions")
def register_function(body: FunctionBody, c: Caller = Depends(caller)) -> dict[str, Any]:
    code = body.function_code
    if len(code) > topo.MAX_PAYLOAD_SIZE:
        raise ApiError(413, "PAYLOAD_TOO_LARGE", "function code exceeds the 10 MiB limit")
    if not body.serialized:
        # raw source from register_source_code: store it as a framed PureSourceTextInspect payload
        from volley.serialize.utils import pack_buffers

        code = pack_buffers([f"st\n{body.function_name}:{code}"])
    fn = Function(
        owner_id=c.user_id, name=body.function_name, code=code,
        description=body.description, meta=body.meta,
    )
    c.session.add(fn)
    c.session.commit()
    return {"function_uuid": fn.id}


@router.get("/v2/functions/{function_id}")
def get_function(function_id: str, c: Caller = Depends(caller)) -> dict[str, Any]:
    fn = _owned(c, Function, function_id, "function")
    return {
        "function_uuid": fn.id, "function_name": fn.name, "function_code": fn.code,
        "description": fn.description, "meta": fn.meta,
    }


@router.delete("/v2/functions/{function_id}")
def delete_function(function_id: str, c: Caller = Depends(caller)) -> dict[str, Any]:
    fn = _owned(c, Function, function_id, "function")
    c.session.delete(fn)
    c.session.commit()
    return {"result": 302, "function_uuid": fn.id}


# --- endpoints ----------------------------------------------------------------------------------
class EndpointBody(BaseModel):
    endpoint_name: str = Field(min_length=1, max_length=255)
    display_name: str | None = None
    metadata: dict[str, Any] | None = None
    multi_user: bool | None = None
    allowed_functions: list[str] | None = None
    authentication_policy: str | None = None
    subscription_uuid: str | None = None
    public: bool | None = None
    high_assurance: bool | None = None
    admins: list[str] | None = None


def _register(c: Caller, body: EndpointBody, endpoint_id: str | None) -> dict[str, Any]:
    if endpoint_id is not None:
        ep_id = _uuid(endpoint_id, "endpoint")
        ep = c.session.get(Endpoint, ep_id)
        if ep is not None and ep.owner_id != c.user_id:
            raise ApiError(404, "NOT_FOUND", f"endpoint {endpoint_id} not found")
    else:
        ep = None
    if ep is None:
        ep = Endpoint(owner_id=c.user_id, name=body.endpoint_name)
        if endpoint_id is not None:
            ep.id = _uuid(endpoint_id, "endpoint")
        c.session.add(ep)
    ep.name = body.endpoint_name
    ep.display_name = body.display_name
    ep.meta = body.metadata
    c.session.flush()
    c.state.gateway.declare_endpoint_queue(ep.id)
    c.session.commit()
    url = c.state.settings.handed_out_url
    return {
        "endpoint_id": ep.id,
        "task_queue_info": topo.queue_info(url, topo.TASKS_EXCHANGE, topo.task_queue(ep.id)),
        "result_queue_info": topo.queue_info(
            url, topo.RESULTS_EXCHANGE, topo.RESULTS_QUEUE, topo.results_routing_key(ep.id)
        ),
        "heartbeat_queue_info": topo.queue_info(
            url, topo.HEARTBEATS_EXCHANGE, topo.HEARTBEATS_QUEUE, topo.heartbeats_routing_key(ep.id)
        ),
    }


@router.post("/v3/endpoints")
def register_endpoint(body: EndpointBody, c: Caller = Depends(caller)) -> dict[str, Any]:
    return _register(c, body, None)


@router.put("/v3/endpoints/{endpoint_id}")
def reregister_endpoint(endpoint_id: str, body: EndpointBody, c: Caller = Depends(caller)) -> dict[str, Any]:
    return _register(c, body, endpoint_id)


def endpoint_status(ep: Endpoint, now: float | None = None) -> str:
    now = time.time() if now is None else now
    if ep.last_heartbeat is None or not ep.active:
        return "offline"
    grace = max(3 * ep.heartbeat_period, 10.0)
    return "online" if now - ep.last_heartbeat <= grace else "offline"


@router.get("/v2/endpoints/{endpoint_id}/status")
def get_endpoint_status(endpoint_id: str, c: Caller = Depends(caller)) -> dict[str, Any]:
    ep = _owned(c, Endpoint, endpoint_id, "endpoint")
    return {"status": endpoint_status(ep), "details": ep.status_report or {}, "last_heartbeat": ep.last_heartbeat}


def _endpoint_doc(ep: Endpoint) -> dict[str, Any]:
    return {
        "uuid": ep.id, "name": ep.name, "display_name": ep.display_name,
        "status": endpoint_status(ep), "owner": ep.owner_id, "metadata": ep.meta,
    }


@router.get("/v2/endpoints/{endpoint_id}")
def get_endpoint(endpoint_id: str, c: Caller = Depends(caller)) -> dict[str, Any]:
    return _endpoint_doc(_owned(c, Endpoint, endpoint_id, "endpoint"))


@router.get("/v2/endpoints")
def list_endpoints(role: str | None = None, c: Caller = Depends(caller)) -> list[dict[str, Any]]:
    rows = c.session.scalars(select(Endpoint).where(Endpoint.owner_id == c.user_id))
    return [_endpoint_doc(ep) for ep in rows]


@router.delete("/v2/endpoints/{endpoint_id}")
def delete_endpoint(endpoint_id: str, c: Caller = Depends(caller)) -> dict[str, Any]:
    ep = _owned(c, Endpoint, endpoint_id, "endpoint")
    c.session.delete(ep)
    c.session.commit()
    return {"result": 302, "endpoint_id": ep.id}


# --- submission ---------------------------------------------------------------------------------
class SubmitBody(BaseModel):
    create_queue: bool = False
    tasks: dict[str, list[str]]
    task_group_id: str | None = None
    resource_specification: dict[str, Any] | None = None
    user_endpoint_config: dict[str, Any] | None = None
    user_runtime: dict[str, Any] | None = None
    result_serializers: list[str] | None = None


@router.post("/v3/endpoints/{endpoint_id}/submit")
def submit(endpoint_id: str, body: SubmitBody, c: Caller = Depends(caller)) -> dict[str, Any]:
    ep = _owned(c, Endpoint, endpoint_id, "endpoint")
    functions = {fid: _owned(c, Function, fid, "function") for fid in body.tasks}
    for fid, payloads in body.tasks.items():
        for p in payloads:
            if len(p) + len(functions[fid].code) > topo.MAX_PAYLOAD_SIZE:
                raise ApiError(413, "PAYLOAD_TOO_LARGE", "a task payload exceeds the 10 MiB limit")

    if body.task_group_id:
        tg_id = _uuid(body.task_group_id, "task group")
        group = c.session.get(TaskGroup, tg_id)
        if group is not None and group.owner_id != c.user_id:
            raise ApiError(404, "NOT_FOUND", f"task group {body.task_group_id} not found")
        if group is None:
            group = TaskGroup(id=tg_id, owner_id=c.user_id)
            c.session.add(group)
    else:
        group = TaskGroup(owner_id=c.user_id)
        c.session.add(group)
    c.session.flush()
    if body.create_queue and not group.has_queue:
        c.state.gateway.declare_sdk_queue(topo.sdk_queue_prefix(c.user_id) + group.id)
        group.has_queue = True

    now = time.time()
    rows: list[dict[str, Any]] = []
    messages: list[tuple[str, str, bytes]] = []
    out: dict[str, list[str]] = {}
    for fid, payloads in body.tasks.items():
        fn = functions[fid]
        ids = out[fid] = []
        for payload in payloads:
            tid = str(uuid.uuid4())
            ids.append(tid)
            rows.append(
                {
                    "id": tid, "owner_id": c.user_id, "task_group_id": group.id,
                    "endpoint_id": ep.id, "function_id": fn.id, "status": "waiting-for-ep",
                    "created_at": now,
                }
            )
            messages.append((tid, fn.id, pack_task(tid, fn.code + payload)))
    if rows:
        c.session.execute(Task.__table__.insert(), rows)
    c.session.commit()
    try:
        c.state.gateway.publish_tasks(
            ep.id, messages,
            resource_specification=body.resource_specification,
            result_serializers=body.result_serializers,
        )
    except (PublishFailed, ConnectionError) as exc:
        c.session.execute(Task.__table__.delete().where(Task.id.in_([r["id"] for r in rows])))
        c.session.commit()
        raise ApiError(503, "BROKER_UNAVAILABLE", f"tasks were not queued: {exc}") from exc
    return {
        "request_id": str(uuid.uuid4()),
        "task_group_id": group.id,
        "endpoint_id": ep.id,
        "tasks": out,
    }


# --- task status --------------------------------------------------------------------------------
def task_doc(t: Task) -> dict[str, Any]:
    doc: dict[str, Any] = {"task_id": t.id, "status": t.status, "task_group_id": t.task_group_id}
    if t.status in TERMINAL_STATES:
        doc["completion_t"] = str(t.completion_t)
        doc["details"] = t.details or {}
        if t.exception is not None:
            doc["exception"] = t.exception
        elif t.result is not None:
            doc["result"] = t.result
    return doc


@router.get("/v2/tasks/{task_id}")
def get_task(task_id: str, c: Caller = Depends(caller)) -> dict[str, Any]:
    return task_doc(_owned(c, Task, task_id, "task"))


class BatchStatusBody(BaseModel):
    task_ids: list[str]


@router.post("/v2/batch_status")
def batch_status(body: BatchStatusBody, c: Caller = Depends(caller)) -> dict[str, Any]:
    wanted = []
    for tid in body.task_ids:
        try:
            wanted.append(str(uuid.UUID(tid)))
        except ValueError:
            continue
    results: dict[str, Any] = {}
    for i in range(0, len(wanted), 500):
        chunk = wanted[i : i + 500]
        q = select(Task).where(Task.id.in_(chunk), Task.owner_id == c.user_id)
        for t in c.session.scalars(q):
            results[t.id] = task_doc(t)
    return {"response": "batch", "results": results}


@router.get("/v2/taskgroup/{task_group_id}")
def get_task_group(task_group_id: str, c: Caller = Depends(caller)) -> dict[str, Any]:
    group = _owned(c, TaskGroup, task_group_id, "task group")
    if not group.has_queue:
        # a reload (Executor.reload_tasks) streams what is still pending: results of a batch sent
        # without create_queue (Client.batch_run) are forwarded from now on
        c.state.gateway.declare_sdk_queue(topo.sdk_queue_prefix(c.user_id) + group.id)
        group.has_queue = True
        c.session.commit()
    rows = c.session.execute(
        select(Task.id, Task.created_at).where(Task.task_group_id == group.id).order_by(Task.created_at)
    )
    return {"taskgroup_id": group.id, "tasks": [{"id": i, "created_at": ts} for i, ts in rows]}


@router.get("/v2/get_amqp_result_connection_url")
def amqp_result_url(c: Caller = Depends(caller)) -> dict[str, Any]:
    return {
        "connection_url": c.state.settings.handed_out_url,
        "queue_prefix": topo.sdk_queue_prefix(c.user_id),
    }
