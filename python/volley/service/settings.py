"""Service settings, read from a JSON file (``--config``) with ``VOLLEY_SERVICE_*`` overrides."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from volley.protocol.topology import MAX_PAYLOAD_SIZE


class SettingsError(ValueError):
    """A setting is missing, unknown or of the wrong type; the text names it."""


@dataclass
class ServiceSettings:
    database_url: str = "sqlite:///volley-service.db"
    # how the service itself reaches the broker (administrative credentials; never handed out)
    broker_url: str = "amqps://localhost:5671/%2F"
    # the broker's management API (https://host:port, credentials in the URL or else those of
    # broker_url); through it the service gives each user and endpoint its own broker user
    broker_management_url: str | None = None
    # where clients reach the broker (scheme, host, port, vhost, query); defaults to broker_url.
    # Without a management API its credentials are handed to everyone: shared-credential mode,
    # which serves one user (a service in it does not start on a database of two)
    public_broker_url: str | None = None
    # key from which per-principal broker passwords are derived (HMAC); required with a
    # management API, and identical on every service process that shares one broker
    secret_key: str | None = None
    ca_file: str | None = None
    host: str = "127.0.0.1"
    port: int = 5000
    transport: str | None = None
    # results and task records are deleted this long after their last change (upstream: 14 days)
    task_ttl_s: float = 14 * 24 * 3600.0
    # how often expired records are purged
    purge_interval_s: float = 3600.0
    # how long a locked endpoint (POST /v3/endpoints/{id}/lock) may not re-register
    endpoint_lock_s: float = 60.0
    # the largest request body accepted (413 above it)
    max_request_bytes: int = MAX_PAYLOAD_SIZE
    # tasks in one submit request (413 above it); SDKs send batches of 128 (upstream, ours)
    max_tasks_per_submit: int = 1000
    # a bearer token stops working this long after it was made (0: only its own expires_at);
    # also the lifetime `volley token create` gives new tokens
    token_ttl_s: float = 90 * 24 * 3600.0
    # tasks per page of GET /v2/taskgroup/{id}: the default and largest `limit`.  A page of
    # 10,000 is ~0.8 MB of JSON; an upstream SDK (which reads no `next`) reloads that many
    max_task_group_page: int = 10_000
    # per-user quotas (403 QUOTA_EXCEEDED beyond them); open task groups are those not expired
    # (task_ttl_s after their last submission)
    max_endpoints_per_user: int = 100
    max_functions_per_user: int = 10_000
    max_task_groups_per_user: int = 10_000
    # tasks of one user waiting in the outbox (stored, not yet taken by the broker: it is away,
    # or the endpoint's task queue is full); a submission past it is answered 429 OUTBOX_FULL
    # and stores nothing (SDKs wait and send it again).  0: no cap
    max_queued_tasks_per_user: int = 100_000
    # broker queue bounds (0: none).  A publish to a full queue is refused (x-overflow
    # reject-publish: the publisher sees a nack), except on SDK queues and the dead-letter
    # queue, where the oldest message goes to the dead-letter queue / is dropped (drop-head).
    # Queues that exist with other arguments are kept as they are.
    results_queue_max_length: int = 1_000_000
    results_queue_max_bytes: int = 2 * 2**30
    heartbeats_queue_max_length: int = 100_000
    heartbeats_queue_max_bytes: int = 256 * 2**20
    # per endpoint: what waits beyond it stays in the service's outbox until the queue drains
    task_queue_max_length: int = 1_000_000
    task_queue_max_bytes: int = 2 * 2**30
    # per task group
    sdk_queue_max_length: int = 1_000_000
    sdk_queue_max_bytes: int = 2**30
    dead_letter_max_length: int = 100_000
    dead_letter_max_bytes: int = 2**30

    @classmethod
    def load(cls, path: str | Path | None = None) -> ServiceSettings:
        values: dict[str, Any] = {}
        if path:
            values.update(json.loads(Path(path).read_text()))
        for f in fields(cls):
            env = os.environ.get(f"VOLLEY_SERVICE_{f.name.upper()}")
            if env is not None:
                values[f.name] = env
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SettingsError(f"unknown service setting(s) {unknown}; known: {sorted(known)}")
        settings = cls(**values)
        for f in fields(cls):
            kind = {"int": int, "float": float}.get(str(f.type))
            if kind is None:
                continue
            try:
                setattr(settings, f.name, kind(getattr(settings, f.name)))
            except (TypeError, ValueError):
                raise SettingsError(
                    f"service setting {f.name} is not a number ({f.type}): "
                    f"{getattr(settings, f.name)!r}"
                ) from None
        return settings

    @property
    def shared_broker_credentials(self) -> bool:
        """True when no management API is configured: every client gets public_broker_url."""
        return not self.broker_management_url
