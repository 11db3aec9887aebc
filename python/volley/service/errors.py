"""Errors as JSON: every failure answers ``{"code": ..., "message": ...}`` with its HTTP status,
the shape globus-sdk parses into ``GlobusAPIError.code`` / ``.messages``.

A database that is busy, locked or unreachable is answered here, for every route at once: 503
``DATABASE_UNAVAILABLE`` with ``Retry-After``.  The transaction was rolled back, so any client
may send the request again; for that to hold, a route changes the broker only after a commit
(see routes/endpoints.py), and what it did before a later 503 is what the repeat does again.
Every 503 carries ``Retry-After``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from typing_extensions import TypedDict

from volley.protocol.codes import ApiCode
from volley.service.db import commit_outcome_unknown, unavailable_cause

log = logging.getLogger(__name__)

# seconds a client is asked to wait after a 503: the request already waited out the database's
# busy timeout, so a short pause is enough for a lock holder to finish; clients back off further
RETRY_AFTER_S = 1


class ErrorBody(TypedDict):
    code: str
    message: str


class ApiError(Exception):
    """An error answered as ``{"code": ..., "message": ...}`` with an HTTP status."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def not_found(what: str, ident: object) -> ApiError:
    return ApiError(404, ApiCode.NOT_FOUND, f"{what} {ident} not found")


def unauthorized(message: str) -> ApiError:
    return ApiError(401, ApiCode.UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer"})


def broker_unavailable(exc: BaseException) -> ApiError:
    return ApiError(503, ApiCode.BROKER_UNAVAILABLE, f"the message broker did not complete the request: {exc}")


_HTTP_CODES = {
    404: ApiCode.NOT_FOUND,
    405: ApiCode.METHOD_NOT_ALLOWED,
    413: ApiCode.PAYLOAD_TOO_LARGE,
}

# the same statuses documented on every authenticated route of the OpenAPI schema
COMMON_RESPONSES: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorBody, "description": "missing, unknown, revoked or expired bearer token"},
    404: {"model": ErrorBody, "description": "no such object owned by the caller"},
    413: {"model": ErrorBody, "description": "request body over the size limit (10 MiB)"},
    422: {"model": ErrorBody, "description": "malformed request body or parameter"},
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_req: Request, exc: ApiError) -> JSONResponse:
        headers = exc.headers
        if exc.status == 503 and not (headers and "Retry-After" in headers):
            headers = {**(headers or {}), "Retry-After": str(RETRY_AFTER_S)}
        return JSONResponse({"code": exc.code, "message": exc.message}, status_code=exc.status, headers=headers)

    @app.exception_handler(DBAPIError)
    @app.exception_handler(PoolTimeout)
    async def _database(req: Request, exc: Exception) -> JSONResponse:
        cause = unavailable_cause(exc)
        if cause is None:
            return _internal(req, exc)
        # one line, no traceback: a busy database is an operating condition, not a bug
        if commit_outcome_unknown(exc):
            # not 503 ("nothing was done"): clients send a 504 again only if that is harmless
            log.warning("database lost during the commit of %s %s: %s; answered 504",
                        req.method, req.url.path, cause)
            return JSONResponse(
                {"code": ApiCode.DATABASE_UNAVAILABLE,
                 "message": f"the database connection broke during the commit ({cause}): the request "
                            "may or may not have been stored; check before sending it again, unless "
                            "it is idempotent (a submit with the same request_id is)"},
                status_code=504,
            )
        log.warning("database unavailable on %s %s: %s; answered 503", req.method, req.url.path, cause)
        return JSONResponse(
            {"code": ApiCode.DATABASE_UNAVAILABLE,
             "message": f"the database could not serve the request: {cause}; nothing was changed, "
                        f"send it again (after Retry-After, {RETRY_AFTER_S} s)"},
            status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)},
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}"
            + (f" ({e['ctx']['error']})" if isinstance(e.get("ctx", {}).get("error"), str) else "")
            for e in exc.errors()
        )
        return JSONResponse(
            {"code": ApiCode.INVALID_REQUEST, "message": f"malformed request: {problems}"},
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # FastAPI's answer to a JSON body it cannot parse other than by a syntax error (not
            # UTF-8, nested deeper than the parser recurses): malformed like any other
            return JSONResponse(
                {"code": ApiCode.INVALID_REQUEST, "message": "malformed request: the body could not be "
                 f"parsed as JSON ({exc.detail}): send one JSON document in UTF-8"},
                status_code=422,
            )
        code = _HTTP_CODES.get(exc.status_code, ApiCode.HTTP_ERROR)
        return JSONResponse(
            {"code": code, "message": str(exc.detail)}, status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(req: Request, exc: Exception) -> JSONResponse:
        return _internal(req, exc)


def _internal(req: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", req.method, req.url.path, exc_info=exc)
    return JSONResponse(
        {"code": ApiCode.INTERNAL_ERROR, "message": f"internal error ({type(exc).__name__}); see the service log"},
        status_code=500,
    )
