"""Request bodies and response shapes of the REST API (docs/service.md).  They also make up
the served OpenAPI schema.

Request models ignore unknown fields (newer SDKs may add some); responses are TypedDicts so
optional keys are absent rather than ``null`` -- the SDK tests ``"result" in doc``.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, Field
from typing_extensions import NotRequired, TypedDict

from volley.protocol.headers import MAX_SYSTEM_RETRIES


# --- requests ------------------------------------------------------------------------------------
class FunctionBody(BaseModel):
    function_name: str = Field(min_length=1, max_length=255)
    # a packed buffer holding one serialized function, or raw source when serialized is false
    function_code: str = Field(min_length=1)
    serialized: bool = True
    meta: dict[str, Any] | None = None
    description: str | None = None
    public: bool = False
    group: str | None = None
    ha_endpoint_id: uuid.UUID | None = None


class EndpointBody(BaseModel):
    endpoint_name: str = Field(min_length=1, max_length=255)
    display_name: str | None = Field(default=None, max_length=255)
    metadata: dict[str, Any] | None = None
    multi_user: bool | None = None
    allowed_functions: list[uuid.UUID] | None = None
    authentication_policy: str | None = None
    subscription_uuid: str | None = None
    public: bool | None = None
    high_assurance: bool | None = None
    admins: list[str] | None = None


class SubmitBody(BaseModel):
    create_queue: bool = False
    # function id -> task payloads (each a packed [args, kwargs] buffer pair)
    tasks: dict[uuid.UUID, list[str]]
    task_group_id: uuid.UUID | None = None
    resource_specification: dict[str, Any] | None = None
    user_endpoint_config: dict[str, Any] | None = None
    user_runtime: dict[str, Any] | None = None
    result_serializers: list[str] | None = None
    # Volley's own: overrides the endpoint's max_retries_on_system_failure for these tasks
    # (upstream SDKs send none: the endpoint's setting decides)
    max_retries_on_system_failure: int | None = Field(default=None, ge=0, le=MAX_SYSTEM_RETRIES, strict=True)
    # Volley's own: the SDK that streams this group's results reads result batches (with
    # create_queue; upstream SDKs send none, and the group's results then come one per message)
    volley_result_batches: bool = False
    # made by the client; a repeated request with the same id gets the first one's answer and
    # queues nothing new (upstream SDKs send none: the service then makes one)
    request_id: uuid.UUID | None = None


class BatchStatusBody(BaseModel):
    task_ids: list[str]


# --- responses -----------------------------------------------------------------------------------
class VersionInfo(TypedDict):
    api: str
    min_sdk_version: str
    min_ep_version: str
    git_sha: str
    service: str


class FunctionRegistered(TypedDict):
    function_uuid: str


class FunctionDoc(TypedDict):
    function_uuid: str
    function_name: str
    function_code: str
    description: str | None
    meta: dict[str, Any] | None
    public: bool


class FunctionDeleted(TypedDict):
    result: int
    function_uuid: str


class PublishKwargs(TypedDict):
    exchange: str
    routing_key: str
    mandatory: bool
    properties: dict[str, Any]


class QueueInfo(TypedDict):
    connection_url: str
    exchange: str
    queue: str
    queue_publish_kwargs: NotRequired[PublishKwargs]
    # result_queue_info only: the service reads result batches (volley.protocol.batches)
    volley_result_batches: NotRequired[bool]


class EndpointRegistered(TypedDict):
    endpoint_id: str
    task_queue_info: QueueInfo
    result_queue_info: QueueInfo
    heartbeat_queue_info: QueueInfo


class EndpointStatus(TypedDict):
    status: str
    details: dict[str, Any]
    last_heartbeat: float | None


class EndpointDoc(TypedDict):
    uuid: str
    name: str
    display_name: str | None
    status: str
    owner: str
    metadata: dict[str, Any] | None
    public: bool
    multi_user: bool
    locked: bool


class EndpointDeleted(TypedDict):
    result: int
    endpoint_id: str


class EndpointLocked(TypedDict):
    endpoint_id: str
    lock_expiration_timestamp: str


class AllowedFunctions(TypedDict):
    endpoint_id: str
    restricted: bool
    functions: list[str]


class Submitted(TypedDict):
    request_id: str
    task_group_id: str
    endpoint_id: str
    tasks: dict[str, list[str]]
    # our extension: why some tasks wait in the outbox (a full task queue, the broker away)
    warning: NotRequired[str]


class TaskDoc(TypedDict):
    task_id: str
    status: str
    task_group_id: NotRequired[str]
    completion_t: NotRequired[str]
    details: NotRequired[dict[str, Any]]
    result: NotRequired[str]
    exception: NotRequired[str]
    reason: NotRequired[str]


class BatchStatus(TypedDict):
    response: str
    results: dict[str, TaskDoc]


class TaskGroupMember(TypedDict):
    id: str
    created_at: str


class TaskGroupDoc(TypedDict):
    taskgroup_id: str
    tasks: list[TaskGroupMember]
    # our extension: present when more tasks follow; pass it as `after` for the next page
    next: NotRequired[str]


class AmqpResultUrl(TypedDict):
    connection_url: str
    queue_prefix: str
    # ours: the broker user (AMQP user_id) of every message the service puts in an SDK queue
    volley_result_sender: str


# --- our extension: overviews for the dashboard and `volley tasks` (routes/overview.py) ----------
class EndpointOverview(TypedDict):
    endpoint_id: str
    name: str
    display_name: str | None
    status: str
    last_heartbeat: float | None
    heartbeat_period: float
    # from the endpoint's last status report; None when it did not say
    engine_type: str | None
    total_workers: int | None
    idle_workers: int | None
    outstanding_tasks: int | None
    queue_depth: int | None


class EndpointPage(TypedDict):
    endpoints: list[EndpointOverview]
    next: NotRequired[str]


class TaskGroupOverview(TypedDict):
    task_group_id: str
    created_at: float
    updated_at: float
    total: int
    # every state ("waiting-for-ep", "success", "failed"), 0 when no task is in it
    counts: dict[str, int]


class TaskGroupPage(TypedDict):
    task_groups: list[TaskGroupOverview]
    next: NotRequired[str]


class Throughput(TypedDict):
    # tasks completed per bucket of `bucket_s` seconds, the first bucket starting at `start`
    start: float | None
    bucket_s: int
    success: list[int]
    failed: list[int]


class TaskFailure(TypedDict):
    task_id: str
    completion_t: float | None
    error_code: str | None
    # the remote error text (a traceback); its last `max_error_chars` characters
    exception: str
    truncated: bool


class TaskGroupSummary(TaskGroupOverview):
    first_submitted: float | None
    last_completed: float | None
    # completed tasks per second from the first submission to the last completion
    rate_per_s: float | None
    throughput: Throughput
    # the most recent failures, newest first
    failures: list[TaskFailure]
