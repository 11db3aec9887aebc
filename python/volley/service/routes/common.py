"""What every authenticated route needs: the caller (user + database session) and ownership
checks that answer 404 for anything not the caller's."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any, TypeVar

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from volley.protocol.codes import ApiCode
from volley.service.auth import TokenExpired, UnknownToken
from volley.service.errors import ApiError, not_found, unauthorized
from volley.service.expiry import is_expired, unexpired
from volley.service.models import Task
from volley.service.state import ServiceState

# auto_error=False: a missing header is our own JSON 401, not FastAPI's 403
bearer = HTTPBearer(auto_error=False, description="a Volley token (`volley token create`)")

Row = TypeVar("Row")


class Caller:
    def __init__(self, state: ServiceState, session: Session, user_id: str) -> None:
        self.state, self.session, self.user_id = state, session, user_id


def service_state(request: Request) -> ServiceState:
    return request.app.state.volley  # type: ignore[no-any-return]


async def caller(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
) -> AsyncIterator[Caller]:
    """Runs on the event loop, not in the thread pool: a sync dependency with ``yield`` costs
    two extra thread hand-overs per request (measured: ~0.5 ms of a 1.3 ms GET).  Only a token
    missing from the cache reaches the database, from a worker thread."""
    state = service_state(request)
    if credentials is None or not credentials.credentials.strip():
        raise unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    token = credentials.credentials.strip()
    session = state.sessions()
    try:
        try:
            user_id = state.tokens.cached(token)
            if user_id is None:
                user_id = await run_in_threadpool(
                    state.tokens.lookup, session, token, max_age_s=state.settings.token_ttl_s
                )
        except UnknownToken:
            raise unauthorized("unknown or revoked token; create one with `volley token create`") from None
        except TokenExpired as exc:
            raise token_expired(exc.expired_at, exc.by_setting) from None
        yield Caller(state, session, user_id)
    finally:
        # returns the connection to the pool (a rollback of nothing after a commit)
        session.close()


def token_expired(expired_at: float, by_setting: bool) -> ApiError:
    why = (" (tokens live at most token_ttl_s seconds, a service setting)" if by_setting else "")
    return ApiError(
        401, ApiCode.TOKEN_EXPIRED,
        f"the bearer token expired at {iso(expired_at)}{why}; create a new one with "
        "`volley token create --user <name>`",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


def check_quota(c: Caller, model: Any, what: str, setting: str, *where: Any) -> None:
    """403 ``QUOTA_EXCEEDED`` if the caller already has as many ``what`` as the setting allows
    (counted before adding one; concurrent requests may overshoot by a few)."""
    limit = getattr(c.state.settings, setting)
    q = select(func.count()).select_from(model).where(model.owner_id == c.user_id, *where)
    have = c.session.scalar(q) or 0
    if have >= limit:
        raise ApiError(
            403, ApiCode.QUOTA_EXCEEDED,
            f"you have {have} {what}, the most a user may have (service setting {setting} = "
            f"{limit}); delete some first" + ("" if what != "task groups" else
                                             " or submit into one you have (they expire with their tasks)"),
        )


def canonical_uuid(value: str) -> str | None:
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        return None


def owned(c: Caller, model: type[Row], ident: str, what: str, *, public_ok: bool = False) -> Row:
    """The caller's row ``ident`` of ``model``, else 404 (also for a malformed id)."""
    key = canonical_uuid(ident)
    row: Any = c.session.get(model, key) if key else None
    if row is None or (row.owner_id != c.user_id and not (public_ok and getattr(row, "public", False))):
        raise not_found(what, ident)
    return row  # type: ignore[no-any-return]


def owned_columns(c: Caller, model: Any, ident: str, what: str, *names: str, public_ok: bool = False) -> Any:
    """Like :func:`owned`, but reads only the named columns (plus ``owner_id``/``public``) with
    one Core query: no ORM identity bookkeeping, and no decoding of the JSON columns a caller
    does not need (an endpoint's status report, say).  Returns a Row."""
    key = canonical_uuid(ident)
    table = model.__table__
    cols = [table.c[n] for n in dict.fromkeys(("id", "owner_id", "public", *names))]
    row = c.session.execute(select(*cols).where(table.c.id == key)).first() if key else None
    if row is None or (row.owner_id != c.user_id and not (public_ok and row.public)):
        raise not_found(what, ident)
    return row


def task_cutoff(c: Caller) -> float:
    """Finished tasks completed before this are expired: answered as if already purged."""
    return time.time() - c.state.settings.task_ttl_s


def live_tasks(c: Caller) -> ColumnElement[bool]:
    """The tasks that have not expired, as a WHERE clause (volley.service.expiry)."""
    return unexpired(task_cutoff(c))


def task_expired(c: Caller, task: Task) -> bool:
    return is_expired(task, task_cutoff(c))


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


def invalid(message: str) -> ApiError:
    return ApiError(422, ApiCode.INVALID_REQUEST, message)


def parse_cursor(after: str, page: str) -> tuple[float, str]:
    """The position ``<timestamp>_<id>`` that a ``page``'s ``next`` names (see :func:`cursor`)."""
    ts, _, ident = after.partition("_")
    key = canonical_uuid(ident)
    try:
        value = float(ts)
    except ValueError:
        key = None
    if key is None:
        raise invalid(f"after: {after!r} is not a cursor from a {page}'s `next`")
    return value, key


def cursor(ts: float, ident: str) -> str:
    """A page's ``next``: where the following page starts (``repr`` keeps the float exact)."""
    return f"{ts!r}_{ident}"


def check_limit(limit: int | None, most: int, setting: str | None = None) -> int:
    """``limit`` (default ``most``), or 422 if it is not between 1 and ``most``."""
    if limit is None:
        return most
    if not 1 <= limit <= most:
        why = f" (service setting {setting})" if setting else ""
        raise invalid(f"limit: {limit} is not between 1 and {most}{why}")
    return limit
