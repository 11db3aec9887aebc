"""Errors as JSON: every failure answers ``{"code": ..., "message": ...}`` with its HTTP status,
the shape globus-sdk parses into ``GlobusAPIError.code`` / ``.messages``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from typing_extensions import TypedDict

from volley.protocol.codes import ApiCode

log = logging.getLogger(__name__)


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
        return JSONResponse(
            {"code": exc.code, "message": exc.message}, status_code=exc.status, headers=exc.headers
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
        log.exception("unhandled error on %s %s", req.method, req.url.path)
        return JSONResponse(
            {"code": ApiCode.INTERNAL_ERROR, "message": f"internal error ({type(exc).__name__}); see the service log"},
            status_code=500,
        )
