"""The service's tables (SQLAlchemy 2 ORM).  The schema itself is created and changed only by
the Alembic migrations in ``volley/service/migrations``; these classes must match them (a test
compares the two).

Times are UNIX seconds (float).  Ids are canonical lowercase UUID strings, so SQLite and
PostgreSQL store and compare them the same way.  Every row that belongs to someone has an
``owner_id``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def new_id() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    # mixed into the broker password of ``u-<id>``: made anew when its last token is revoked
    broker_salt: Mapped[str] = mapped_column(String(32), default="", server_default="")


class BrokerMode(Base):
    """One row (id 1): how a service last started on this database.  Shared-credential mode
    serves one user, and token creation, which may run outside the service, reads it here."""

    __tablename__ = "broker_mode"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    # True: no management API, every tenant gets public_broker_url; None: no service started yet
    shared: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    recorded_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Token(Base):
    __tablename__ = "tokens"
    # sha256 of the bearer token; the token itself is never stored
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    # the token's first 12 characters ("vly_" + 8 of its 43 random ones), to recognise it in
    # `volley token list` and revoke it by; None for tokens made before it was kept
    prefix: Mapped[str | None] = mapped_column(String(16), nullable=True, index=True)
    # None: no expiry of its own (it still expires token_ttl_s after created_at)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # the last time a service process looked it up in the database (at most once a minute)
    last_used_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Function(Base):
    __tablename__ = "functions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    # the packed buffer the endpoint receives in front of each task's arguments
    code: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # public functions may be read and run by every user (upstream's ``public``)
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)


class Endpoint(Base):
    __tablename__ = "endpoints"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    display_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # None: any function may run; else the only function ids the service will queue for it
    allowed_functions: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    multi_user: Mapped[bool] = mapped_column(Boolean, default=False)
    # set by POST .../lock: until then the endpoint may not register again
    locked_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_heartbeat: Mapped[float | None] = mapped_column(Float, nullable=True)
    heartbeat_period: Mapped[float] = mapped_column(Float, default=30.0)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    status_report: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    # mixed into the broker password of ``e-<id>``: random, made anew on lock and registration
    # (and a deleted endpoint's row goes with it), so a leaked password stops working then
    broker_salt: Mapped[str] = mapped_column(String(32), default="", server_default="")


class TaskGroup(Base):
    __tablename__ = "task_groups"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # results of this group are forwarded to the owner's AMQP queue for it
    has_queue: Mapped[bool] = mapped_column(Boolean, default=False)
    # a Volley SDK reads that queue (it said so at its last submit or reload): results may be
    # forwarded several to a message (volley.protocol.batches)
    result_batches: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    # last submission into the group; the group expires with its last task
    updated_at: Mapped[float] = mapped_column(Float, default=time.time, index=True)


class Task(Base):
    __tablename__ = "tasks"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    task_group_id: Mapped[str] = mapped_column(ForeignKey("task_groups.id", ondelete="CASCADE"))
    endpoint_id: Mapped[str] = mapped_column(String(36), index=True)
    function_id: Mapped[str] = mapped_column(String(36))
    status: Mapped[str] = mapped_column(String(32), default="waiting-for-ep")
    result: Mapped[str | None] = mapped_column(Text, nullable=True)
    exception: Mapped[str | None] = mapped_column(Text, nullable=True)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    completion_t: Mapped[float | None] = mapped_column(Float, nullable=True)
    # the result reached the task group's queue (or there is none); until then a redelivered
    # duplicate of the result is forwarded again rather than ignored
    forwarded: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    # submission or completion, whichever is later: the TTL counts from here
    updated_at: Mapped[float] = mapped_column(Float, default=time.time, index=True)
    # the submission this task came with (its headers); None for tasks older than the outbox
    submission_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    # the task's arguments (a packed [args, kwargs] pair), kept until the task completes: the
    # outbox rebuilds the task message from them and the function's code
    payload: Mapped[str | None] = mapped_column(Text, nullable=True)
    # the broker confirmed the task message; false = in the outbox, to be published (again)
    published: Mapped[bool] = mapped_column(Boolean, default=False, server_default=true())

    __table_args__ = (
        Index("ix_tasks_group_created", "task_group_id", "created_at"),
        # partial indexes stay as small as the outbox and the set of unfinished tasks
        # the outbox, by endpoint and age: a round pages each due endpoint and walks no entry
        # of an endpoint whose task queue is full
        Index("ix_tasks_unpublished_endpoint", "endpoint_id", "created_at", "id",
              postgresql_where=text("published = false"), sqlite_where=text("published = 0")),
        # each user's outbox, counted against max_queued_tasks_per_user at every submission
        Index("ix_tasks_unpublished_owner", "owner_id",
              postgresql_where=text("published = false"), sqlite_where=text("published = 0")),
        Index("ix_tasks_payload_held", "status",
              postgresql_where=text("payload IS NOT NULL"), sqlite_where=text("payload IS NOT NULL")),
    )


class Submission(Base):
    """One accepted batch submission: what it answered, so that a retry with the same
    ``request_id`` gets the same answer, and the headers its task messages carry, so that the
    outbox can rebuild them.  Expires with the tasks (created_at + TTL)."""

    __tablename__ = "submissions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # made by the client (or by the service when it sent none); unique per owner
    request_id: Mapped[str] = mapped_column(String(36))
    endpoint_id: Mapped[str] = mapped_column(String(36))
    task_group_id: Mapped[str] = mapped_column(String(36))
    # [[function_id, [task_id, ...]], ...] in the order of the answer's ``tasks``
    tasks: Mapped[list[Any]] = mapped_column(JSON)
    resource_specification: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    result_serializers: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    # the submitter's override of the endpoint's max_retries_on_system_failure; NULL: none
    max_retries_on_system_failure: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=time.time, index=True)

    # also the index of owner_id (leftmost), which the cascade from users needs
    __table_args__ = (UniqueConstraint("owner_id", "request_id", name="uq_submissions_owner_request"),)


# "cancelled": on request (volley.service.routes.cancel); a result arriving later is ignored
TERMINAL_STATES = ("success", "failed", "cancelled")
