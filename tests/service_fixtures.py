"""Fixtures of the web-service tests, loaded by ``pytest_plugins = ["service_fixtures"]`` in
each tests/test_service_*.py (helpers they use directly live in service_helpers.py).

``svc`` is the service built in-process and driven with FastAPI's TestClient, once per database
backend: a SQLite file, and PostgreSQL in a database made for this session (dropped at its end;
the variant is skipped with the reason when no server answers).  Both run against the session's
private RabbitMQ node from the shared ``stack`` fixture, each in a vhost of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from service_helpers import (
    BACKENDS,
    PG_SERVER_URL,
    BrokerHost,
    PgDatabases,
    Service,
    TcpRelay,
    broker_info,
    start_service,
)


@pytest.fixture(scope="session")
def broker_host(stack: dict[str, Any]) -> Iterator[BrokerHost]:
    host = BrokerHost(broker_info(stack))
    try:
        yield host
    finally:
        host.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The PostgreSQL server URL, or a clean skip when none answers."""
    engine = sa.create_engine(PG_SERVER_URL, connect_args={"connect_timeout": 3}, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        pytest.skip(f"no PostgreSQL server at {PG_SERVER_URL} ({type(exc).__name__}); "
                    "set VOLLEY_TEST_POSTGRES_URL to run the PostgreSQL variant")
    finally:
        engine.dispose()
    yield PG_SERVER_URL


@pytest.fixture(scope="session")
def pg_databases(postgres_server: str) -> Iterator[PgDatabases]:
    dbs = PgDatabases(postgres_server)
    try:
        yield dbs
    finally:
        dbs.drop_all()


@pytest.fixture(params=BACKENDS)
def fresh_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a new, empty database of each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    return request.getfixturevalue("pg_databases").create()


@pytest.fixture(scope="session")
def sqlite_service(broker_host: BrokerHost, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    url = f"sqlite:///{tmp_path_factory.mktemp('service-sqlite') / 'service.db'}"
    yield from start_service(broker_host.new_vhost(), url, "sqlite")


@pytest.fixture(scope="session")
def postgresql_service(broker_host: BrokerHost, pg_databases: PgDatabases) -> Iterator[Service]:
    yield from start_service(broker_host.new_vhost(), pg_databases.create(), "postgresql")


@pytest.fixture(params=BACKENDS)
def svc(request: pytest.FixtureRequest) -> Service:
    """The in-process service on each database backend."""
    return request.getfixturevalue(f"{request.param}_service")  # type: ignore[no-any-return]


@pytest.fixture()
def relay(broker_host: BrokerHost) -> Iterator[TcpRelay]:
    """A TCP relay to the session's broker; ``relay.stop()`` is an outage for its users."""
    r = TcpRelay(broker_host.info.amqps_port)
    r.start()
    try:
        yield r
    finally:
        r.stop()
