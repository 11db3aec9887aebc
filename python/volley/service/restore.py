"""Re-create what a broker lost: a fresh node, or one restored from an older backup, comes back
without some of what the service set up on it.  :func:`restore_broker` puts it all back without
restarting the service:

* the topology (exchanges, ``results``, ``heartbeats``, the dead-letter queue);
* every endpoint's task queue and binding -- and when a queue was missing, the endpoint's
  unfinished tasks go back to the outbox, since the messages that were in it are gone;
* the broker users and permissions of the endpoints that may connect (not of locked ones), if
  missing;
* the result queues of task groups that still await results (and that this process used
  lately), and the broker users of their owners, if missing; other users are set up again on
  their next ``/v2/get_amqp_result_connection_url``.

A broker user that exists is left as it is (its password may derive from an earlier
``secret_key``; its clients still use it).  Each step is idempotent, so running it when nothing
was lost changes nothing and costs a few broker round trips and a management call per endpoint
and per user with results on the way.  It runs in the outbox thread (see
:class:`volley.service.outbox.OutboxPublisher`), asked for by the result router after each
reconnection that followed a loss, and by the outbox itself when ``results`` is missing.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import cast

from sqlalchemy import Table, select, update
from sqlalchemy.orm import Session, sessionmaker

from volley.protocol import topology as topo
from volley.service.credentials import BrokerCredentials
from volley.service.gateway import BrokerGateway
from volley.service.models import TERMINAL_STATES, Endpoint, Task, TaskGroup, User

log = logging.getLogger(__name__)

_TASKS = cast(Table, Task.__table__)
# one restore at a time per process: two would only repeat each other's work
_lock = threading.Lock()


@dataclass
class RestoreReport:
    """What one restore found and did."""

    endpoints: int = 0
    lost_queues: list[str] = field(default_factory=list)  # endpoints whose task queue was missing
    requeued: int = 0  # tasks returned to the outbox
    endpoint_users: int = 0  # broker users of endpoints created again
    sdk_queues: int = 0  # result queues declared (again)
    users: int = 0  # broker users of users created again


def requeue_lost_tasks(sessions: sessionmaker[Session], endpoint_id: str, *, before: float | None = None) -> int:
    """Return to the outbox the unfinished tasks published to ``endpoint_id`` (created before
    ``before``) after its task queue was found missing: their messages went with it.  A task
    that is running on the endpoint meanwhile runs again -- at-least-once execution."""
    cutoff = time.time() if before is None else before
    t = _TASKS.c
    with sessions() as s:
        result = s.execute(
            update(_TASKS)
            .where(t.endpoint_id == endpoint_id, t.published.is_(True), t.payload.is_not(None),
                   t.status.not_in(TERMINAL_STATES), t.created_at < cutoff)
            .values(published=False)
        )
        s.commit()
    count = int(getattr(result, "rowcount", 0) or 0)
    if count:
        log.warning("returned %d tasks of endpoint %s to the outbox: its task queue was lost",
                    count, endpoint_id)
    return count


def _endpoints(sessions: sessionmaker[Session]) -> list[tuple[str, bool, str]]:
    """(endpoint id, may connect, broker password salt) of every endpoint: a locked one keeps
    its queue, not its user."""
    with sessions() as s:
        rows = s.execute(select(Endpoint.id, Endpoint.locked_until, Endpoint.broker_salt))
        return [(i, locked is None, salt) for i, locked, salt in rows]


def _user_salts(sessions: sessionmaker[Session], user_ids: list[str]) -> dict[str, str]:
    """The broker password salt of each user (the current one: a restore must hand out nothing
    older)."""
    out: dict[str, str] = {}
    with sessions() as s:
        for i in range(0, len(user_ids), 500):
            q = select(User.id, User.broker_salt).where(User.id.in_(user_ids[i : i + 500]))
            out.update({uid: salt for uid, salt in s.execute(q)})
    return out


def _waiting_groups(sessions: sessionmaker[Session]) -> set[tuple[str, str]]:
    """(owner, task group) of the groups with a result queue and unfinished tasks.  Unfinished
    tasks hold their arguments, so this reads the small partial index of those."""
    with sessions() as s:
        rows = s.execute(
            select(TaskGroup.owner_id, TaskGroup.id).distinct()
            .join(Task, Task.task_group_id == TaskGroup.id)
            .where(TaskGroup.has_queue.is_(True), Task.payload.is_not(None),
                   Task.status.not_in(TERMINAL_STATES))
        )
        return {(owner, group) for owner, group in rows}


def _owner_of(queue: str) -> str | None:
    """The user id in ``sdk.<user_id>.<task_group_id>``."""
    parts = queue.split(".")
    return parts[1] if len(parts) == 3 and parts[0] == "sdk" else None


def _restore_endpoints(gateway: BrokerGateway, credentials: BrokerCredentials,
                       sessions: sessionmaker[Session], report: RestoreReport) -> None:
    for endpoint_id, may_connect, salt in _endpoints(sessions):
        queue = topo.task_queue(endpoint_id)
        if not gateway.queue_exists(queue):
            report.lost_queues.append(endpoint_id)
        # declared and bound again even when present: the binding goes when `tasks` goes
        gateway.declare_endpoint_queue(endpoint_id)
        if endpoint_id in report.lost_queues:
            report.requeued += requeue_lost_tasks(sessions, endpoint_id)
        if may_connect and credentials.restore_endpoint(endpoint_id, salt):
            report.endpoint_users += 1
        report.endpoints += 1


def _restore_result_streams(gateway: BrokerGateway, credentials: BrokerCredentials,
                            sessions: sessionmaker[Session], report: RestoreReport) -> None:
    queues = set(gateway.recent_sdk_queues())
    queues.update(topo.sdk_queue_prefix(owner) + group for owner, group in _waiting_groups(sessions))
    gateway.forget_declared()
    for name in sorted(queues):
        gateway.declare_sdk_queue(name)
    report.sdk_queues = len(queues)
    owners = {owner for owner in map(_owner_of, queues) if owner}
    salts = _user_salts(sessions, sorted(owners))
    report.users = sum(credentials.restore_user(user_id, salts[user_id])
                       for user_id in sorted(owners) if user_id in salts)


def restore_broker(
    gateway: BrokerGateway, credentials: BrokerCredentials, sessions: sessionmaker[Session]
) -> RestoreReport:
    """Re-create on the broker whatever of the service's set-up it lacks (see the module's
    text).  Raises ``ConnectionError`` while the broker is unreachable and
    :class:`~volley.service.broker_admin.BrokerAdminError` while its management API is; the
    caller tries again later."""
    with _lock:
        report = RestoreReport()
        gateway.declare_topology()
        # principals this process remembers may be gone: each is set up again on next use,
        # and the ones that matter now right below
        credentials.forget()
        _restore_endpoints(gateway, credentials, sessions, report)
        _restore_result_streams(gateway, credentials, sessions, report)
    lost = report.lost_queues or report.endpoint_users or report.users
    log.log(
        logging.WARNING if lost else logging.INFO,
        "broker set-up checked: %d endpoints (task queues re-created: %d, tasks back in the "
        "outbox: %d, broker users re-created: %d), %d result queues declared, user broker users "
        "re-created: %d", report.endpoints, len(report.lost_queues), report.requeued,
        report.endpoint_users, report.sdk_queues, report.users,
    )
    return report
