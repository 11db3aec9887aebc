"""The FastAPI application: wiring of storage, broker, background consumers and routes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.orm import sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException

from volley.protocol.topology import MAX_PAYLOAD_SIZE
from volley.service.auth import TokenCache
from volley.service.db import init_db, make_engine
from volley.service.gateway import BrokerGateway
from volley.service.router import HeartbeatListener, ResultRouter
from volley.service.settings import ServiceSettings
from volley.version import __version__

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answered as ``{"code": ..., "message": ...}`` with an HTTP status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class ServiceState:
    settings: ServiceSettings
    sessions: sessionmaker
    gateway: BrokerGateway
    tokens: TokenCache


def create_app(settings: ServiceSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sessions = init_db(make_engine(settings.database_url))
        gateway = BrokerGateway(settings.broker_url, ca_file=settings.ca_file, transport=settings.transport)
        gateway.declare_topology()
        app.state.volley = ServiceState(settings, sessions, gateway, TokenCache())
        loops = [ResultRouter(gateway, sessions), HeartbeatListener(gateway, sessions)]
        for loop in loops:
            loop.start()
        log.info("volley service %s ready on %s:%s", __version__, settings.host, settings.port)
        try:
            yield
        finally:
            for loop in loops:
                loop.stop()
            for loop in loops:
                loop.join(timeout=10)
            gateway.close()

    app = FastAPI(title="Volley", version=__version__, lifespan=lifespan)

    @app.exception_handler(ApiError)
    async def _api_error(_req: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"code": exc.code, "message": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        )
        return JSONResponse(
            {"code": "INVALID_REQUEST", "message": f"malformed request body: {problems}"},
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "HTTP_ERROR")
        return JSONResponse({"code": code, "message": str(exc.detail)}, status_code=exc.status_code)

    @app.middleware("http")
    async def _limit_size(request: Request, call_next):  # type: ignore[no-untyped-def]
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_PAYLOAD_SIZE + 64 * 1024:
            return JSONResponse(
                {
                    "code": "PAYLOAD_TOO_LARGE",
                    "message": f"request body of {length} bytes exceeds the 10 MiB limit",
                },
                status_code=413,
            )
        return await call_next(request)

    from volley.service.routes import router

    app.include_router(router)
    return app
