"""Storage set-up: engines (SQLite in WAL mode by default, PostgreSQL by URL), schema migrations
(Alembic, run at start by whoever opens the database first) and sessions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# pg_advisory_xact_lock key: service processes starting together migrate one after the other
_MIGRATION_LOCK_KEY = 0x766F6C6C6579  # "volley"


class DatabaseError(RuntimeError):
    """The database cannot be used as it is; the text says why and what to do."""


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # FULL: a result is on disk before its AMQP message is acked, even across power loss
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    if url.startswith("postgresql:") or url.startswith("postgres:"):
        raise DatabaseError(
            f"database URL {_redact(url)!r} names no driver: use postgresql+psycopg://... "
            "(psycopg 3, `pip install 'psycopg[binary]'`)"
        )
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not even a URL: nothing secret can be recovered from the message
        return "<unparsable URL>"


def alembic_config(connection: Connection) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (idempotent; safe with several processes on PostgreSQL)."""
    from alembic import command

    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
        names = set(inspect(conn).get_table_names())
        if "users" in names and "alembic_version" not in names:
            raise DatabaseError(
                f"the database at {_redact(str(engine.url))} was created by a pre-release Volley "
                "without migrations; move it aside (the local stack does this itself) or point "
                "the service at a new database"
            )
        command.upgrade(alembic_config(conn), revision)


def is_legacy_database(engine: Engine) -> bool:
    """True for a database made by the pre-migration skeleton (tables, no alembic_version)."""
    with engine.connect() as conn:
        names = set(inspect(conn).get_table_names())
    return "users" in names and "alembic_version" not in names


def init_db(engine: Engine) -> sessionmaker:
    """Migrate to the newest schema and return a session factory."""
    migrate(engine)
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def database_session(url: str) -> Iterator[Session]:
    """One session on the database at ``url`` (migrated first), for a command that runs
    outside the service; the engine is closed afterwards."""
    engine = make_engine(url)
    try:
        with init_db(engine)() as session:
            yield session
    finally:
        engine.dispose()
