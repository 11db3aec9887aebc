"""Storage set-up: engines (SQLite in WAL mode by default, PostgreSQL by URL), schema migrations
(Alembic, run at start by whoever opens the database first), sessions, and which database
failures are passing (busy, locked, unreachable) rather than a fault of the request."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# pg_advisory_xact_lock key: service processes starting together migrate one after the other
_MIGRATION_LOCK_KEY = 0x766F6C6C6579  # "volley"
# How long a statement waits for a lock another connection holds before the request is answered
# 503 (and retried by the SDK).  Below the SDK's HTTP timeout (60 s), so that a client waiting
# for a busy database hears "try again" rather than losing the answer.  A database URL may set
# its own: ``sqlite:///path?timeout=5``, ``postgresql+psycopg://...?options=-c lock_timeout=5000``.
BUSY_TIMEOUT_S = 30.0


class DatabaseError(RuntimeError):
    """The database cannot be used as it is; the text says why and what to do."""


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        query = make_url(url).query
        connect_args: dict[str, Any] = {"check_same_thread": False}
        if "timeout" not in query:  # connect_args would override the URL's own
            connect_args["timeout"] = BUSY_TIMEOUT_S
        engine = create_engine(url, connect_args=connect_args)

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
    engine = create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
    if url.startswith("postgresql") and "lock_timeout" not in str(make_url(url).query.get("options", "")):
        # without it a statement behind a lock (a migration, an admin's LOCK TABLE, a stuck
        # transaction) would wait for ever, and so would the request and its client.  A SET
        # rather than the ``options`` startup parameter, which PgBouncer refuses unless told to
        # ignore it; committed, or the pool's rollback at the first checkin would undo it
        set_lock_timeout = f"SET lock_timeout = {int(BUSY_TIMEOUT_S * 1000)}"

        @event.listens_for(engine, "connect")
        def _pg_lock_timeout(dbapi_conn: Any, _record: Any) -> None:
            with dbapi_conn.cursor() as cur:
                cur.execute(set_lock_timeout)
            dbapi_conn.commit()

    return engine


def _redact(url: str) -> str:
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
            # another process's migration may take longer than the busy timeout: wait it out
            conn.execute(text("SET LOCAL lock_timeout = 0"))
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


# SQLite's primary result codes (the low byte of an extended code) for a database that another
# connection holds, that is out of space, or that the disk failed to read or write
_SQLITE_PASSING = {5: "the database is locked by another writer (SQLITE_BUSY)",
                   6: "a table is locked (SQLITE_LOCKED)",
                   10: "the disk failed to read or write the database (SQLITE_IOERR)",
                   13: "the database or its disk is full (SQLITE_FULL)"}
_SQLITE_TEXTS = ("database is locked", "database table is locked", "disk i/o error", "disk is full")
# PostgreSQL SQLSTATEs (classes, or whole codes) of a failure the same request may not meet
# again: connection trouble, a serialization failure or deadlock, the server short of resources
# or shutting down, a lock not granted in time, a statement cancelled by a timeout
_PG_PASSING = ("08", "40", "53", "55P03", "57", "58")


def unavailable_cause(exc: BaseException) -> str | None:
    """Why the database could not serve a request for a passing reason -- busy, locked, full,
    unreachable, a deadlock -- so that the same request may well succeed later; None when the
    error is the request's or the program's own (a constraint, a bad statement)."""
    if isinstance(exc, sa_exc.TimeoutError):  # no pooled connection came free in time
        return f"no database connection came free in time ({exc})"
    if not isinstance(exc, sa_exc.DBAPIError):
        return None
    orig = exc.orig
    if exc.connection_invalidated:
        return f"the connection to the database was lost ({type(orig).__name__}: {_first_line(orig)})"
    if not isinstance(exc, sa_exc.OperationalError):
        return None
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int):
        return _SQLITE_PASSING.get(code & 0xFF)
    sqlstate = getattr(orig, "sqlstate", "")
    if sqlstate is None:  # psycopg: the client itself failed to reach or hear the server
        return f"the database did not answer ({_first_line(orig)})"
    if sqlstate:
        if sqlstate.startswith(_PG_PASSING):
            return f"the database refused for now ({sqlstate}: {_first_line(orig)})"
        return None
    text_ = str(orig).lower()
    if any(t in text_ for t in _SQLITE_TEXTS):  # a driver that gives no code
        return f"the database is busy or out of space ({_first_line(orig)})"
    return None


def commit_outcome_unknown(exc: BaseException) -> bool:
    """True when the connection broke outside any statement of the request: at its commit (or
    rollback), so the commit may have happened.  A failed connect or statement leaves nothing
    behind."""
    return isinstance(exc, sa_exc.DBAPIError) and exc.statement is None and exc.connection_invalidated


def _first_line(exc: BaseException | None) -> str:
    return str(exc).strip().splitlines()[0] if exc is not None and str(exc).strip() else type(exc).__name__
