"""Endpoints: register (POST/PUT ``/v3/endpoints``), status, metadata, list, delete, lock, and
allowed functions."""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import APIRouter, Depends
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, IntegrityError

from volley.protocol import topology as topo
from volley.protocol.batches import CAPABILITY as BATCH_CAPABILITY
from volley.protocol.codec import pack_result
from volley.protocol.codes import ApiCode, ResultCode
from volley.protocol.outcomes import ACK
from volley.service.broker_admin import BrokerAdminError
from volley.service.credentials import new_salt
from volley.service.db import unavailable_cause
from volley.service.errors import (
    COMMON_RESPONSES,
    ApiError,
    ErrorBody,
    broker_unavailable,
    not_found,
)
from volley.service.models import TERMINAL_STATES, Endpoint, Task, new_id
from volley.service.routes.common import (
    Caller,
    caller,
    canonical_uuid,
    check_quota,
    invalid,
    iso,
    live_tasks,
    owned,
)
from volley.service.schemas import (
    AllowedFunctions,
    EndpointBody,
    EndpointDeleted,
    EndpointDoc,
    EndpointLocked,
    EndpointRegistered,
    EndpointStatus,
)

log = logging.getLogger(__name__)

router = APIRouter(tags=["endpoints"], responses=COMMON_RESPONSES)
_BROKER_ERRORS = (ConnectionError, TimeoutError, BrokerAdminError)


def endpoint_status(ep: Endpoint, now: float | None = None) -> str:
    """``online`` while heartbeats keep coming (three may be missed), else ``offline``."""
    now = time.time() if now is None else now
    if ep.last_heartbeat is None or not ep.active:
        return "offline"
    grace = max(3 * ep.heartbeat_period, 10.0)
    return "online" if now - ep.last_heartbeat <= grace else "offline"


def _register(c: Caller, body: EndpointBody, endpoint_id: str | None) -> EndpointRegistered:
    now = time.time()
    ep: Endpoint | None = None
    if endpoint_id is None:
        ep_id = new_id()
    else:
        ep_id = canonical_uuid(endpoint_id) or ""
        if not ep_id:
            raise invalid(f"endpoint id {endpoint_id!r} is not a UUID")
        ep = c.session.get(Endpoint, ep_id)
        if ep is not None and ep.owner_id != c.user_id:
            raise not_found("endpoint", endpoint_id)
        if ep is not None and ep.locked_until is not None and ep.locked_until > now:
            raise ApiError(
                423, ApiCode.ENDPOINT_LOCKED,
                f"endpoint {ep_id} was stopped remotely and may not register again before "
                f"{iso(ep.locked_until)}",
            )
    if ep is None:
        check_quota(c, Endpoint, "endpoints", "max_endpoints_per_user")
        # a new (or deleted and registered anew) endpoint gets a new broker password; a lock
        # makes one too. A plain re-registration keeps it: a second instance of a running
        # endpoint must not cut the running one off the broker and take its exclusive queue
        ep = Endpoint(id=ep_id, owner_id=c.user_id, name=body.endpoint_name, broker_salt=new_salt())
        c.session.add(ep)
    ep.name = body.endpoint_name
    ep.display_name = body.display_name
    ep.meta = body.metadata
    ep.allowed_functions = None if body.allowed_functions is None else [str(f) for f in body.allowed_functions]
    ep.public = bool(body.public)
    ep.multi_user = bool(body.multi_user)
    ep.locked_until = None
    try:
        c.session.flush()
    except IntegrityError:
        c.session.rollback()
        raise ApiError(409, ApiCode.CONFLICT, f"endpoint {ep_id} was registered concurrently; try again") from None
    state = c.state
    try:
        state.gateway.declare_endpoint_queue(ep.id)
        # made again (same password): another process may have revoked it meanwhile (a lock)
        url = state.credentials.for_endpoint(ep.id, ep.broker_salt or "", refresh=True)
    except _BROKER_ERRORS as exc:
        c.session.rollback()
        raise broker_unavailable(exc) from exc
    c.session.commit()
    return {
        "endpoint_id": ep.id,
        "task_queue_info": topo.queue_info(url, topo.TASKS_EXCHANGE, topo.task_queue(ep.id)),  # type: ignore[typeddict-item]
        # the result router reads several results per message: Volley's endpoints send them so
        "result_queue_info": topo.queue_info(  # type: ignore[typeddict-item]
            url, topo.RESULTS_EXCHANGE, topo.RESULTS_QUEUE, topo.results_routing_key(ep.id)
        ) | {BATCH_CAPABILITY: True},
        "heartbeat_queue_info": topo.queue_info(  # type: ignore[typeddict-item]
            url, topo.HEARTBEATS_EXCHANGE, topo.HEARTBEATS_QUEUE, topo.heartbeats_routing_key(ep.id)
        ),
    }


_REGISTER_RESPONSES: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorBody, "description": "quota exceeded"},
    409: {"model": ErrorBody, "description": "registered concurrently"},
    423: {"model": ErrorBody, "description": "endpoint locked (stopped remotely)"},
    503: {"model": ErrorBody, "description": "broker unavailable"},
}


@router.post("/v3/endpoints", responses=_REGISTER_RESPONSES)
def register_endpoint(body: EndpointBody, c: Caller = Depends(caller)) -> EndpointRegistered:
    """Register a new endpoint; the answer carries its broker credentials and queues."""
    return _register(c, body, None)


@router.put("/v3/endpoints/{endpoint_id}", responses=_REGISTER_RESPONSES)
def reregister_endpoint(endpoint_id: str, body: EndpointBody, c: Caller = Depends(caller)) -> EndpointRegistered:
    """Register an endpoint under a known id (created if new; 404 if another user's)."""
    return _register(c, body, endpoint_id)


@router.get("/v2/endpoints/{endpoint_id}/status")
def get_endpoint_status(endpoint_id: str, c: Caller = Depends(caller)) -> EndpointStatus:
    ep = owned(c, Endpoint, endpoint_id, "endpoint")
    return {"status": endpoint_status(ep), "details": ep.status_report or {}, "last_heartbeat": ep.last_heartbeat}


def _endpoint_doc(ep: Endpoint, now: float) -> EndpointDoc:
    return {
        "uuid": ep.id, "name": ep.name, "display_name": ep.display_name,
        "status": endpoint_status(ep, now), "owner": ep.owner_id, "metadata": ep.meta,
        "public": ep.public, "multi_user": ep.multi_user,
        "locked": ep.locked_until is not None and ep.locked_until > now,
    }


@router.get("/v2/endpoints/{endpoint_id}")
def get_endpoint(endpoint_id: str, c: Caller = Depends(caller)) -> EndpointDoc:
    return _endpoint_doc(owned(c, Endpoint, endpoint_id, "endpoint"), time.time())


@router.get("/v2/endpoints")
def list_endpoints(role: str | None = None, c: Caller = Depends(caller)) -> list[EndpointDoc]:
    """The caller's endpoints (every ``role`` lists the same: endpoints are never shared)."""
    now = time.time()
    rows = c.session.scalars(select(Endpoint).where(Endpoint.owner_id == c.user_id).order_by(Endpoint.created_at))
    return [_endpoint_doc(ep, now) for ep in rows]


@router.delete("/v2/endpoints/{endpoint_id}", responses={503: {"model": ErrorBody}})
def delete_endpoint(endpoint_id: str, c: Caller = Depends(caller)) -> EndpointDeleted:
    """Delete an endpoint: its broker user and task queue go, and every task still waiting for
    it fails with a clear error (delivered to the SDK like any result).

    The database decides first: the endpoint is locked and that is committed before the broker
    is touched, so a database that cannot commit leaves everything as it was.  Should the broker
    or the final commit then fail, the answer is 503 and the endpoint stays locked (it cannot
    register again for ``endpoint_lock_s``); every step is idempotent, so DELETE again finishes."""
    ep = owned(c, Endpoint, endpoint_id, "endpoint")
    _lock(c, ep)
    c.session.commit()
    pending = list(
        c.session.scalars(
            select(Task.id).where(
                Task.endpoint_id == ep.id, Task.status.not_in(TERMINAL_STATES), live_tasks(c),
            )
        )
    )
    state = c.state
    try:
        state.credentials.revoke_endpoint(ep.id)
        state.gateway.delete_endpoint_queue(ep.id)
        _fail_tasks(c, ep.id, pending, f"endpoint {ep.id} was deleted before this task ran")
    except _BROKER_ERRORS as exc:
        raise ApiError(
            503, ApiCode.BROKER_UNAVAILABLE,
            f"the message broker did not complete the deletion ({exc}); endpoint {ep.id} is locked "
            "meanwhile: send DELETE again to finish it",
        ) from exc
    try:
        c.session.delete(ep)
        c.session.commit()
    except DBAPIError as exc:
        cause = unavailable_cause(exc)
        if cause is None:
            raise
        c.session.rollback()
        # not the generic "nothing was changed": the broker side is gone by now
        raise ApiError(
            503, ApiCode.DATABASE_UNAVAILABLE,
            f"endpoint {ep.id} no longer has a broker user or task queue, but the database could "
            f"not delete it ({cause}); it stays locked meanwhile: send DELETE again to finish it",
        ) from exc
    return {"result": 302, "endpoint_id": ep.id}


def _lock(c: Caller, ep: Endpoint) -> float:
    """Mark ``ep`` stopped until the lock expires (not yet committed); returns that time."""
    until = time.time() + c.state.settings.endpoint_lock_s
    ep.locked_until = until
    ep.active = False
    ep.broker_salt = new_salt()  # the password it had never works again
    return until


def _fail_tasks(c: Caller, endpoint_id: str, task_ids: list[str], reason: str) -> None:
    """Resolve tasks with an error Result sent through the ``results`` exchange, so the result
    router stores and forwards it exactly as it would one from the endpoint."""
    rk = topo.results_routing_key(endpoint_id)
    for i in range(0, len(task_ids), 1000):
        chunk = task_ids[i : i + 1000]
        batch = [
            (topo.RESULTS_EXCHANGE, rk,
             pack_result(tid, reason, error_code=ResultCode.ENDPOINT_DELETED, error_message=reason), None, None)
            for tid in chunk
        ]
        outcomes = c.state.gateway.publisher.publish_batch(batch, mandatory=True)
        if any(o != ACK for o in outcomes):
            raise ConnectionError(f"the broker did not accept the failure notices of {len(chunk)} tasks")


@router.post("/v3/endpoints/{endpoint_id}/lock", responses={503: {"model": ErrorBody}})
def lock_endpoint(endpoint_id: str, c: Caller = Depends(caller)) -> EndpointLocked:
    """Stop an endpoint remotely: its broker user is revoked (closing its connections) and it
    may not register again until the lock expires.  Queued tasks wait for its return.  The lock
    is committed before the broker user goes; if the broker then fails, the lock stands and
    locking again (which the 503 invites) revokes the user."""
    ep = owned(c, Endpoint, endpoint_id, "endpoint")
    until = _lock(c, ep)
    c.session.commit()
    try:
        c.state.credentials.revoke_endpoint(ep.id)
    except _BROKER_ERRORS as exc:
        raise broker_unavailable(exc) from exc
    return {"endpoint_id": ep.id, "lock_expiration_timestamp": iso(until)}


@router.get("/v3/endpoints/{endpoint_id}/allowed_functions")
def allowed_functions(endpoint_id: str, c: Caller = Depends(caller)) -> AllowedFunctions:
    ep = owned(c, Endpoint, endpoint_id, "endpoint")
    funcs = ep.allowed_functions
    return {"endpoint_id": ep.id, "restricted": funcs is not None, "functions": list(funcs or [])}
