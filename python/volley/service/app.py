"""The FastAPI application: wiring of storage, broker, background threads and routes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from volley.service.auth import TokenCache
from volley.service.credentials import BrokerCredentials, record_broker_mode
from volley.service.db import init_db, make_engine
from volley.service.errors import ApiError, install_error_handlers
from volley.service.expiry import Purger
from volley.service.gateway import BrokerGateway, QueueLimits
from volley.service.limits import BodySizeLimit
from volley.service.outbox import OutboxPublisher
from volley.service.restore import requeue_lost_tasks, restore_broker
from volley.service.router import HeartbeatListener, ResultRouter
from volley.service.settings import ServiceSettings
from volley.service.state import ServiceState
from volley.version import __version__

log = logging.getLogger(__name__)

__all__ = ["ApiError", "ServiceState", "create_app"]


def create_app(settings: ServiceSettings) -> FastAPI:
    """Build the service.  Nothing connects until the app starts (its lifespan): then the
    database is migrated, the broker topology declared and the background threads started."""
    # fail at once on inconsistent settings, not at the first request
    BrokerCredentials.check(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        sessions = init_db(engine)
        with sessions() as session:
            record_broker_mode(session, settings)
        gateway = BrokerGateway(
            settings.broker_url, ca_file=settings.ca_file, transport=settings.transport,
            sdk_queue_ttl_s=settings.task_ttl_s, limits=QueueLimits.of(settings),
        )
        threads: list[Any] = []
        try:
            gateway.declare_topology()
            credentials = BrokerCredentials(settings)
            app.state.volley = ServiceState(settings, sessions, gateway, credentials, TokenCache())
            outbox = OutboxPublisher(
                gateway, sessions, restore=lambda: restore_broker(gateway, credentials, sessions)
            )

            def queue_lost(endpoint_id: str) -> None:
                requeue_lost_tasks(sessions, endpoint_id)
                outbox.wake()

            gateway.on_queue_lost = queue_lost
            threads = [
                ResultRouter(gateway, sessions, on_reconnect=outbox.request_restore),
                HeartbeatListener(gateway, sessions),
                Purger(sessions, settings.task_ttl_s, settings.purge_interval_s),
                outbox,
            ]
            # the broker may have lost its state while no service ran: the outbox's first round
            # puts back what endpoints and SDKs rely on (idempotent; cheap when nothing was lost)
            outbox.request_restore()
            for t in threads:
                t.start()
            app.state.volley_threads = threads
            log.info("volley service %s ready on %s:%s", __version__, settings.host, settings.port)
            yield
        finally:
            for t in threads:
                t.stop()
            for t in threads:
                t.join(timeout=10)
            gateway.close()
            engine.dispose()

    app = FastAPI(
        title="Volley",
        version=__version__,
        summary="Globus-Compute-compatible function-as-a-service: REST API of the web service",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)

    from volley.service.dashboard import router as dashboard
    from volley.service.routes import router

    app.include_router(router)
    app.include_router(dashboard)
    return app
