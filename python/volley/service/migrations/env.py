"""Alembic environment: always run on a connection handed in by ``volley.service.db.migrate``
(or by a test), never from an ini file, so the service's own engine settings apply."""

from __future__ import annotations

from alembic import context

from volley.service.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run Volley's migrations through volley.service.db.migrate(engine); "
        "the alembic command line is not wired to a database"
    )
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things: batch mode rebuilds the table instead
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
