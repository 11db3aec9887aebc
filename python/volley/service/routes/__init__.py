"""REST routes (docs/service.md).

Handlers are plain functions (FastAPI runs them on its thread pool): the database and broker
clients they use are blocking.  Anything a caller does not own answers 404, exactly as if it
did not exist.
"""

from __future__ import annotations

from fastapi import APIRouter

from volley.service.routes import cancel, endpoints, functions, overview, tasks, version

router = APIRouter()
for _module in (version, functions, endpoints, cancel, tasks, overview):
    router.include_router(_module.router)

__all__ = ["router"]
