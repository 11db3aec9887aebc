"""The TTL purge never takes a task that is not finished, nor what the outbox still needs.

A task's TTL counts from its completion.  An unfinished one -- waiting for an endpoint that is
offline for weeks, or running the guide's 24-hour task on a long queue -- is neither deleted nor
answered 404 however old its submission: its future still waits for the result.  Its stored
submission stays too, since the outbox rebuilds the task's message from the submission's
headers.  Tasks are aged by writing their times in the real database, as weeks would.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from service_helpers import (
    Service,
    User,
    endpoint_publish_result,
    result_body,
    sdk_queue,
    serializer,
    tenant_with_tasks,
    wait_for,
)
from volley.protocol.messages import decode
from volley.service.expiry import purge_expired, purge_submissions
from volley.service.models import Submission, Task

pytest_plugins = ["service_fixtures"]


def _complete(svc: Service, user: User, reg: dict[str, Any], task_id: str, value: Any) -> None:
    endpoint_publish_result(svc, reg, result_body(task_id, value))
    wait_for(lambda: svc.task(user, task_id)["status"] == "success", what=f"the result of {task_id}")


def _age(svc: Service, task_ids: list[str], by: float, *, completed: bool) -> None:
    """Move the tasks' submission (and, with ``completed``, completion) ``by`` seconds back."""
    with svc.state.sessions() as s:
        for t in s.scalars(sa.select(Task).where(Task.id.in_(task_ids))):
            t.created_at -= by
            t.updated_at -= by
            if completed:
                assert t.completion_t is not None
                t.completion_t -= by
        s.commit()


def test_an_unfinished_task_older_than_the_ttl_is_kept_served_and_completed(svc: Service) -> None:
    ttl = svc.state.settings.task_ttl_s
    alice, reg, out, (waiting, done_long_ago, done_lately) = tenant_with_tasks(svc, 3)
    _complete(svc, alice, reg, done_long_ago, 1)
    _complete(svc, alice, reg, done_lately, 2)
    svc.broker.drain(sdk_queue(alice, out["task_group_id"]))
    _age(svc, [waiting], ttl + 3600, completed=False)  # submitted long ago, still waiting
    _age(svc, [done_long_ago], ttl + 3600, completed=True)  # finished long ago
    with svc.state.sessions() as s:  # submitted long ago, finished lately: the TTL runs from the finish
        s.execute(sa.update(Task).where(Task.id == done_lately).values(created_at=time.time() - ttl - 3600))
        s.commit()

    tasks, _groups = purge_expired(svc.state.sessions, ttl)
    assert tasks >= 1  # the session's other modules may have aged finished tasks of their own
    assert svc.count(Task, id=done_long_ago) == 0
    assert svc.count(Task, id=waiting) == 1 and svc.count(Task, id=done_lately) == 1

    # answered as it is, not as expired: the future waiting for it is not told "404"
    assert svc.task(alice, waiting)["status"] == "waiting-for-ep"
    answer = svc.client.post("/v2/batch_status", headers=alice.headers,
                             json={"task_ids": [waiting, done_long_ago, done_lately]}).json()["results"]
    assert sorted(answer) == sorted([waiting, done_lately]) and answer[waiting]["status"] == "waiting-for-ep"
    listed = svc.client.get(f"/v2/taskgroup/{out['task_group_id']}", headers=alice.headers).json()["tasks"]
    assert sorted(t["id"] for t in listed) == sorted([waiting, done_lately])
    assert svc.client.get(f"/v2/tasks/{done_long_ago}", headers=alice.headers).status_code == 404

    # and when its result comes at last, it is stored and reaches the SDK like any other
    _complete(svc, alice, reg, waiting, "at last")
    assert serializer.deserialize(svc.task(alice, waiting)["result"]) == "at last"
    forwarded = svc.broker.drain(sdk_queue(alice, out["task_group_id"]))
    assert [decode(b).task_id for _m, _p, b in forwarded] == [waiting]


def test_a_submission_whose_task_is_unfinished_outlives_the_ttl(svc: Service) -> None:
    """The outbox (and a restore of a lost task queue) rebuilds an unfinished task's message
    with its submission's headers: the submission stays until the task is finished."""
    ttl = svc.state.settings.task_ttl_s
    alice, reg, _out, (t1,) = tenant_with_tasks(svc, 1)
    with svc.state.sessions() as s:
        s.execute(sa.update(Submission).where(Submission.owner_id == alice.id).values(created_at=time.time() - ttl - 10))
        s.commit()
    purge_submissions(svc.state.sessions, ttl)
    assert svc.count(Submission, owner_id=alice.id) == 1

    _complete(svc, alice, reg, t1, 1)
    assert purge_submissions(svc.state.sessions, ttl) >= 1
    assert svc.count(Submission, owner_id=alice.id) == 0


def test_deleting_the_endpoint_fails_its_unfinished_tasks_however_old(svc: Service) -> None:
    """An unfinished task never expires; deleting its endpoint is how it ends, and then it
    expires like any finished task."""
    ttl = svc.state.settings.task_ttl_s
    alice, reg, _out, (old, new) = tenant_with_tasks(svc, 2)
    _age(svc, [old], ttl + 3600, completed=False)
    r = svc.client.delete(f"/v2/endpoints/{reg['endpoint_id']}", headers=alice.headers)
    assert r.status_code == 200, r.text
    for tid in (old, new):
        doc = wait_for(lambda t=tid: (d := svc.task(alice, t))["status"] == "failed" and d, what=f"{tid} to fail")
        assert "was deleted before this task ran" in doc["exception"]
