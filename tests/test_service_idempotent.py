"""Idempotent submission: a client-made ``request_id`` makes a retried submit return the first
answer and queue nothing new.  Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import sqlalchemy as sa

from service_helpers import Service, User, new_uuid, result_body, task_payload, wait_for
from volley.protocol import topology as topo
from volley.service.expiry import purge_submissions
from volley.service.models import Submission, Task, TaskGroup

pytest_plugins = ["service_fixtures"]


def _body(fid: str, n: int, request_id: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"create_queue": True, "tasks": {fid: [task_payload(i) for i in range(n)]}, **extra}
    if request_id is not None:
        body["request_id"] = request_id
    return body


def _post(svc: Service, user: User, ep: str, body: dict[str, Any]) -> Any:
    return svc.client.post(f"/v3/endpoints/{ep}/submit", json=body, headers=user.headers)


def _queued(svc: Service, ep: str) -> Counter[str]:
    """Task ids now in the endpoint's queue, with how often each is there (taking them)."""
    return Counter(p.headers["task_uuid"] for _m, p, _b in svc.broker.drain(f"{ep}.tasks"))


def _setup(svc: Service) -> tuple[User, str, str, str]:
    alice = svc.new_user()
    fid, fid2 = svc.register_function(alice), svc.register_function(alice)
    return alice, fid, fid2, svc.register_endpoint(alice)["endpoint_id"]


def test_repeated_request_id_returns_the_same_answer_and_queues_each_task_once(svc: Service) -> None:
    alice, fid, fid2, ep = _setup(svc)
    rid = new_uuid()
    body = {"create_queue": True, "request_id": rid,
            "tasks": {fid2: [task_payload(0)], fid: [task_payload(i) for i in range(3)]}}
    first = _post(svc, alice, ep, body)
    assert first.status_code == 200, first.text
    again = [_post(svc, alice, ep, body) for _ in range(3)]
    assert all(r.status_code == 200 for r in again)
    answer = first.json()
    assert answer["request_id"] == rid
    # the same answer, byte for byte: ids, their order, and the order of the functions
    assert all(r.content == first.content for r in again)
    assert list(answer["tasks"]) == [fid2, fid]
    ids = answer["tasks"][fid] + answer["tasks"][fid2]
    assert _queued(svc, ep) == Counter(ids)  # each once
    assert svc.count(Task, owner_id=alice.id) == 4 and svc.count(Submission, owner_id=alice.id) == 1
    # a retry that reshuffles the batch is still the same request: it gets the first answer
    shuffled = _post(svc, alice, ep, {**body, "tasks": {fid: [task_payload(9)]}})
    assert shuffled.json() == answer and svc.count(Task, owner_id=alice.id) == 4
    assert svc.broker.queue_depth(f"{ep}.tasks") == 0


def test_without_request_id_each_submit_is_new_and_gets_one_made(svc: Service) -> None:
    alice, fid, _fid2, ep = _setup(svc)
    a, b = (_post(svc, alice, ep, _body(fid, 1)).json() for _ in range(2))
    assert a["request_id"] != b["request_id"] and a["tasks"] != b["tasks"]
    with svc.state.sessions() as s:
        stored = set(s.scalars(sa.select(Submission.request_id).where(Submission.owner_id == alice.id)))
    assert stored == {a["request_id"], b["request_id"]}
    assert sum(_queued(svc, ep).values()) == 2


def test_request_id_reused_for_another_endpoint_or_group_is_409_and_changes_nothing(svc: Service) -> None:
    alice, fid, _fid2, ep = _setup(svc)
    other = svc.register_endpoint(alice)["endpoint_id"]
    rid = new_uuid()
    first = _post(svc, alice, ep, _body(fid, 2, rid)).json()
    _queued(svc, ep)
    for endpoint, extra in ((other, {}), (ep, {"task_group_id": new_uuid()})):
        r = _post(svc, alice, endpoint, _body(fid, 2, rid, **extra))
        assert r.status_code == 409, r.text
        assert r.json()["code"] == "REQUEST_ID_REUSED" and rid in r.json()["message"]
    assert svc.count(Task, owner_id=alice.id) == 2
    assert svc.broker.queue_depth(f"{other}.tasks") == 0 and svc.broker.queue_depth(f"{ep}.tasks") == 0
    # naming the group it did use is the same request
    same = _post(svc, alice, ep, _body(fid, 2, rid, task_group_id=first["task_group_id"]))
    assert same.json() == first


def test_request_ids_belong_to_their_user(svc: Service) -> None:
    alice, fid, _fid2, ep = _setup(svc)
    bob = svc.new_user()
    bfid, bep = svc.register_function(bob), svc.register_endpoint(bob)["endpoint_id"]
    rid = new_uuid()
    a = _post(svc, alice, ep, _body(fid, 1, rid)).json()
    r = _post(svc, bob, bep, _body(bfid, 1, rid))
    assert r.status_code == 200, r.text  # bob's own submission: neither 409 nor alice's answer
    b = r.json()
    assert b["request_id"] == rid and b["endpoint_id"] == bep and b["tasks"] != a["tasks"]
    assert sum(_queued(svc, ep).values()) == 1 and sum(_queued(svc, bep).values()) == 1


def test_concurrent_duplicates_store_and_queue_one_submission(svc: Service) -> None:
    alice, fid, _fid2, ep = _setup(svc)
    rid = new_uuid()
    body = _body(fid, 5, rid)
    answers: list[Any] = []
    start = threading.Barrier(6)

    def send() -> None:
        start.wait()
        answers.append(_post(svc, alice, ep, body))

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(answers) == 6 and all(r.status_code == 200 for r in answers), [r.text for r in answers]
    assert len({r.content for r in answers}) == 1
    ids = answers[0].json()["tasks"][fid]
    assert svc.count(Task, owner_id=alice.id) == 5 and svc.count(Submission, owner_id=alice.id) == 1
    assert _queued(svc, ep) == Counter(ids)


def test_malformed_request_id_is_422_and_changes_nothing(svc: Service) -> None:
    alice, fid, _fid2, ep = _setup(svc)
    for bad in ("not-a-uuid", 7, ""):
        r = _post(svc, alice, ep, {**_body(fid, 1), "request_id": bad})
        assert r.status_code == 422 and r.json()["code"] == "INVALID_REQUEST", r.text
        assert "request_id" in r.json()["message"]
    assert svc.count(Task, owner_id=alice.id) == 0 and svc.count(TaskGroup, owner_id=alice.id) == 0


def test_expired_submission_frees_its_request_id(svc: Service) -> None:
    alice, fid, _fid2, ep = _setup(svc)
    rid = new_uuid()
    first = _post(svc, alice, ep, _body(fid, 1, rid)).json()
    (tid,) = first["tasks"][fid]
    # finished: an unfinished task keeps its submission (tests/test_purge.py)
    svc.broker.publish(topo.RESULTS_EXCHANGE, topo.results_routing_key(ep), result_body(tid, 1))
    wait_for(lambda: svc.task(alice, tid)["status"] == "success", what="the result")
    ttl = svc.state.settings.task_ttl_s
    with svc.state.sessions() as s:  # age alice's submission past the TTL
        s.execute(sa.update(Submission).where(Submission.owner_id == alice.id)
                  .values(created_at=time.time() - ttl - 10))
        s.commit()
    assert purge_submissions(svc.state.sessions, ttl) >= 1
    assert svc.count(Submission, owner_id=alice.id) == 0
    second = _post(svc, alice, ep, _body(fid, 1, rid)).json()
    assert second["request_id"] == rid and second["tasks"] != first["tasks"]
    assert sum(_queued(svc, ep).values()) == 2


def test_database_failure_at_commit_is_503_and_queues_nothing(svc: Service) -> None:
    """A database that fails the commit itself: nothing is stored or published, and the
    answer says so (the trigger is real database behaviour, scoped to this test's user)."""
    alice, fid, _fid2, ep = _setup(svc)
    engine = svc.state.sessions.kw["bind"]
    with engine.begin() as conn:
        if svc.backend == "sqlite":
            # the body names a table that does not exist: an OperationalError when it fires
            conn.exec_driver_sql(
                f"CREATE TRIGGER fail_{alice.id[:8]} BEFORE INSERT ON submissions "
                f"WHEN NEW.owner_id = '{alice.id}' BEGIN DELETE FROM no_such_table; END"
            )
        else:
            conn.exec_driver_sql(
                "CREATE OR REPLACE FUNCTION volley_test_fail() RETURNS trigger AS $$ BEGIN "
                "RAISE EXCEPTION 'database went away' USING ERRCODE = '08006'; END $$ LANGUAGE plpgsql"
            )
            conn.exec_driver_sql(
                f"CREATE TRIGGER fail_{alice.id[:8]} BEFORE INSERT ON submissions FOR EACH ROW "
                f"WHEN (NEW.owner_id = '{alice.id}') EXECUTE FUNCTION volley_test_fail()"
            )
    try:
        r = _post(svc, alice, ep, _body(fid, 2, new_uuid()))
    finally:
        with engine.begin() as conn:
            suffix = "" if svc.backend == "sqlite" else " ON submissions"
            conn.exec_driver_sql(f"DROP TRIGGER fail_{alice.id[:8]}{suffix}")
    assert r.status_code == 503, r.text
    assert r.json()["code"] == "DATABASE_UNAVAILABLE" and "nothing was queued" in r.json()["message"]
    assert svc.count(Task, owner_id=alice.id) == 0 and svc.count(Submission, owner_id=alice.id) == 0
    assert svc.broker.queue_depth(f"{ep}.tasks") == 0
